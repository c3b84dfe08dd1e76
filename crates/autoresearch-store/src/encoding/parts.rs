//! Large records and snapshots cut into parts (file format 5).
//!
//! redb keeps a value inside a B-tree leaf; a leaf that does not fit in
//! one 4 KiB page gets an allocation of its own whose size is a power of
//! two (redb 4.6, `LeafBuilder::build` -> `PageAllocator::allocate`), so a
//! 600 KB value takes 1 MiB. A value longer than [`INLINE_MAX`] is
//! therefore stored as a short stub in its table (`records`,
//! `snapshots`) and its bytes, cut into parts, under `(world, tick, part)`
//! in a parts table ([`RECORD_PARTS`], [`SNAPSHOT_PARTS`]). Each part but
//! the last fills one allocation exactly: a leaf with one pair takes
//! `4 + 4 + 24 + len` bytes (header, the value's end offset, the fixed
//! `(u64, u64, u64)` key), so parts are `2^k * 4096 - 32` bytes. The
//! parts of a value are written with ascending keys, which redb appends
//! to fresh rightmost leaves without splitting a full one.
//!
//! The stub: [`PACKED_VERSION`] (2), [`CODEC_PARTS`], the joined length (u32
//! little-endian), the number of parts (u32 little-endian), and the xxh3
//! 64-bit hash of the joined bytes (u64 little-endian). The joined bytes
//! are an ordinary stored value (a version byte, a codec byte, ...).
//!
//! [`PACKED_VERSION`]: super::PACKED_VERSION

use super::{DecodeError, PACKED_VERSION};
use redb::TableDefinition;

/// `(world, tick, part)` -> the bytes of part `part` of a record stored
/// in parts (file format 5).
pub(crate) const RECORD_PARTS: TableDefinition<(u64, u64, u64), &[u8]> =
    TableDefinition::new("record_parts");

/// `(world, tick, part)` -> the bytes of part `part` of a snapshot stored
/// in parts (file format 5).
pub(crate) const SNAPSHOT_PARTS: TableDefinition<(u64, u64, u64), &[u8]> =
    TableDefinition::new("snapshot_parts");

/// Codec byte of a version 2 value (file format 5): a stub, the value's
/// bytes are in the parts table.
pub(crate) const CODEC_PARTS: u8 = 3;

/// redb's page size (redb's default, which this crate keeps).
const PAGE: usize = 4096;

/// What a leaf holding one `(u64, u64, u64)` key and a variable-width
/// value takes besides the value: header, end offset, key.
const LEAF_OVERHEAD: usize = 4 + 4 + 24;

/// The longest value stored in its own table: longer ones would need a
/// leaf of more than one page.
pub(crate) const INLINE_MAX: usize = PAGE - LEAF_OVERHEAD;

/// Part sizes, largest first: each fills a 16, 8 or 4 KiB allocation.
const PART_SIZES: [usize; 3] = [
    4 * PAGE - LEAF_OVERHEAD,
    2 * PAGE - LEAF_OVERHEAD,
    INLINE_MAX,
];

/// Length of a stub.
const STUB_LEN: usize = 2 + 4 + 4 + 8;

/// What a stub says of its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stub {
    /// Length of the joined value.
    pub(crate) len: usize,
    /// Number of parts.
    pub(crate) parts: u64,
    hash: u64,
}

/// Cuts `value` into parts when it is longer than [`INLINE_MAX`]: the stub
/// to store in its place and the parts, in order. `None` for a value
/// stored as it is.
pub(crate) fn split(value: &[u8]) -> Option<(Vec<u8>, Vec<&[u8]>)> {
    if value.len() <= INLINE_MAX || value.len() > u32::MAX as usize {
        return None;
    }
    let mut parts = Vec::with_capacity(value.len() / PART_SIZES[0] + 3);
    let mut rest = value;
    while !rest.is_empty() {
        let size = PART_SIZES
            .iter()
            .copied()
            .find(|s| *s <= rest.len())
            .unwrap_or(rest.len());
        let (part, tail) = rest.split_at(size);
        parts.push(part);
        rest = tail;
    }
    let mut stub = Vec::with_capacity(STUB_LEN);
    stub.extend_from_slice(&[PACKED_VERSION, CODEC_PARTS]);
    stub.extend_from_slice(&(value.len() as u32).to_le_bytes());
    stub.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    stub.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(value).to_le_bytes());
    Some((stub, parts))
}

/// The stub `bytes` is, `None` for a value stored whole. Errors on a
/// value marked as a stub that is not one.
pub(crate) fn stub(bytes: &[u8]) -> Result<Option<Stub>, DecodeError> {
    match bytes {
        [v, CODEC_PARTS, rest @ ..] if *v == PACKED_VERSION => {
            let fields = <[u8; STUB_LEN - 2]>::try_from(rest).map_err(|_| {
                DecodeError::Corrupt(format!(
                    "a stub of a value in parts is {} bytes, expected {STUB_LEN}",
                    bytes.len()
                ))
            })?;
            let [l0, l1, l2, l3, p0, p1, p2, p3, h @ ..] = fields;
            Ok(Some(Stub {
                len: u32::from_le_bytes([l0, l1, l2, l3]) as usize,
                parts: u64::from(u32::from_le_bytes([p0, p1, p2, p3])),
                hash: u64::from_le_bytes(h),
            }))
        }
        _ => Ok(None),
    }
}

/// Joins the parts of a value stored in parts, checked against its stub:
/// every part present once and in order, the length and hash equal.
/// `parts` yields `(part number, bytes)` in key order.
pub(crate) fn join<'a>(
    stub: Stub,
    parts: impl IntoIterator<Item = (u64, &'a [u8])>,
) -> Result<Vec<u8>, DecodeError> {
    // A damaged stub's claim is not trusted with an allocation.
    let mut out = Vec::with_capacity(stub.len.min(64 << 20));
    let mut count = 0u64;
    for (i, part) in parts {
        if i != count {
            return Err(DecodeError::Corrupt(format!(
                "part {count} of {} of a value in parts is missing",
                stub.parts
            )));
        }
        if out.len() + part.len() > stub.len {
            return Err(DecodeError::Corrupt(format!(
                "the parts of a value hold more than its {} bytes",
                stub.len
            )));
        }
        out.extend_from_slice(part);
        count += 1;
    }
    if count != stub.parts || out.len() != stub.len {
        return Err(DecodeError::Corrupt(format!(
            "a value in {} parts of {} bytes: found {count} parts of {} bytes",
            stub.parts,
            stub.len,
            out.len()
        )));
    }
    if xxhash_rust::xxh3::xxh3_64(&out) != stub.hash {
        return Err(DecodeError::Corrupt(
            "the parts of a value do not match its checksum".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(parts: &[&[u8]]) -> Vec<(u64, Vec<u8>)> {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, p.to_vec()))
            .collect()
    }

    fn join_owned(stub: Stub, parts: &[(u64, Vec<u8>)]) -> Result<Vec<u8>, DecodeError> {
        join(stub, parts.iter().map(|(i, p)| (*i, p.as_slice())))
    }

    #[test]
    fn short_values_are_stored_whole_and_long_ones_fill_their_allocations() {
        assert!(split(&[7; INLINE_MAX]).is_none());
        let value: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (stub_bytes, parts) = split(&value).unwrap();
        assert_eq!(stub_bytes.len(), STUB_LEN);
        // Every part but the last fills a 4, 8 or 16 KiB leaf exactly.
        for p in &parts[..parts.len() - 1] {
            assert!(PART_SIZES.contains(&p.len()), "{}", p.len());
            assert!((p.len() + LEAF_OVERHEAD).is_power_of_two());
        }
        assert!(parts.last().unwrap().len() <= INLINE_MAX);
        let s = stub(&stub_bytes).unwrap().unwrap();
        assert_eq!((s.len, s.parts), (value.len(), parts.len() as u64));
        assert_eq!(join_owned(s, &numbered(&parts)).unwrap(), value);
        // A whole value is no stub.
        assert_eq!(stub(&[PACKED_VERSION, 0, 1, 2]).unwrap(), None);
    }

    #[test]
    fn damaged_stubs_and_parts_are_corrupt_not_a_panic() {
        let value: Vec<u8> = (0..40_000u32).map(|i| (i % 13) as u8).collect();
        let (stub_bytes, parts) = split(&value).unwrap();
        let s = stub(&stub_bytes).unwrap().unwrap();
        let whole = numbered(&parts);
        let corrupt = |r: Result<Vec<u8>, DecodeError>, what: &str| match r {
            Err(DecodeError::Corrupt(reason)) => assert!(reason.contains(what), "{reason}"),
            other => panic!("expected corrupt ({what}), got {other:?}"),
        };
        // A part missing in the middle, at the end, a part changed, one too many.
        let mut gap = whole.clone();
        gap.remove(1);
        corrupt(join_owned(s, &gap), "missing");
        corrupt(join_owned(s, &whole[..whole.len() - 1]), "found");
        let mut changed = whole.clone();
        changed[0].1[5] ^= 1;
        corrupt(join_owned(s, &changed), "checksum");
        let mut more = whole.clone();
        more.push((whole.len() as u64, vec![1, 2, 3]));
        corrupt(join_owned(s, &more), "more than");
        // A cut stub.
        assert!(matches!(
            stub(&stub_bytes[..7]),
            Err(DecodeError::Corrupt(r)) if r.contains("stub")
        ));
    }

    proptest::proptest! {
        /// Any value, cut and joined, is itself; cut values fill their
        /// allocations.
        #[test]
        fn parts_join_to_the_whole_value(len in 0usize..70_000, seed in 0u8..255) {
            let value: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 8) as u8).collect();
            match split(&value) {
                None => proptest::prop_assert!(value.len() <= INLINE_MAX),
                Some((stub_bytes, parts)) => {
                    let s = stub(&stub_bytes).unwrap().unwrap();
                    proptest::prop_assert_eq!(s.parts, parts.len() as u64);
                    for p in &parts[..parts.len() - 1] {
                        proptest::prop_assert!(PART_SIZES.contains(&p.len()));
                    }
                    proptest::prop_assert_eq!(join_owned(s, &numbered(&parts)).unwrap(), value);
                }
            }
        }
    }
}
