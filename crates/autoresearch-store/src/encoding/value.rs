//! The value codecs: the version and codec bytes that start a stored
//! value, and its postcard body kept raw or compressed (zstd, LZ4).

use super::columnar::{self, CODEC_COLUMNS, COLUMNS_VERSION};
use super::{DecodeError, PACKED_VERSION, VALUE_VERSION};
use serde::Serialize;

/// The version byte of values that are never compressed (catalogue
/// entries): the plain encoding of file format 1.
const PLAIN_VERSION: u8 = 1;

/// Codec byte of a version 2 value: the postcard body, as is.
pub(crate) const CODEC_RAW: u8 = 0;
/// Codec byte of a version 2 value: LZ4 block format (lz4_flex), the
/// uncompressed length first as a little-endian u32.
pub(crate) const CODEC_LZ4: u8 = 1;

/// Codec byte of a version 2 value (file format 4): one zstd frame
/// (level [`ZSTD_LEVEL`]), the uncompressed length first as a
/// little-endian u32.
pub(crate) const CODEC_ZSTD: u8 = 2;

/// Bodies shorter than this are stored raw: compression gains little on
/// them and the many small per-tick records stay cheap to read. From it
/// on zstd pays: a record of 20 status changes (about 366 bytes of
/// postcard, most of them deltas' run ids and statuses) compresses to
/// 211–225 bytes (`docs/benchmarks.md`, bytes per update tick).
const COMPRESS_FROM: usize = 256;

/// Bodies from [`COMPRESS_FROM`] up to this size are compressed with zstd
/// at [`ZSTD_LEVEL`], larger ones (an ingest of thousands of runs,
/// snapshots) at [`ZSTD_LARGE_LEVEL`]. (File format 4 wrote LZ4 past it.)
const ZSTD_UP_TO: usize = 256 << 10;

/// zstd's level for [`CODEC_ZSTD`] values below [`ZSTD_UP_TO`]: its
/// default. A tick's record of 100 changed runs (33 KB) takes well under
/// a millisecond.
const ZSTD_LEVEL: i32 = 3;

/// zstd's level for values of [`ZSTD_UP_TO`] or more: its fastest
/// positive level. On a 10,000-run ingest record (3.3 MB of postcard;
/// `docs/benchmarks.md`) it wrote 720 KB in about the time LZ4 took for
/// 992 KB; level 3 saved 4% more and took 2.5 times as long.
const ZSTD_LARGE_LEVEL: i32 = 1;

/// The largest ratio of a zstd value of [`ZSTD_UP_TO`] or more to its
/// compressed length: a larger claimed length is a damaged value, refused
/// before anything is allocated. A body that compresses further is
/// written with LZ4, whose own limit ([`MAX_LZ4_RATIO`]) bounds it.
const MAX_ZSTD_RATIO: usize = 256;

/// Each thread's zstd contexts, made on first use and kept: a context
/// is about a megabyte, which this machine's page faults make costlier
/// than compressing a tick's record.
type ZstdContexts = (
    Option<zstd::bulk::Compressor<'static>>,
    Option<zstd::bulk::Decompressor<'static>>,
);

thread_local! {
    static ZSTD: std::cell::RefCell<ZstdContexts> = const { std::cell::RefCell::new((None, None)) };
}

/// LZ4's largest expansion is about 255x; a claimed length beyond this is
/// a damaged value, refused before anything is allocated.
const MAX_LZ4_RATIO: usize = 256;

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    postcard::to_extend(value, vec![PLAIN_VERSION]).map_err(|e| e.to_string())
}

/// Version 2: the body compressed when it is long enough and shrinks, raw
/// otherwise, encoded into a buffer of `size_hint` bytes to start with.
pub(super) fn encode_packed_sized<T: Serialize>(
    size_hint: usize,
    value: &T,
) -> Result<Vec<u8>, String> {
    encode_versioned(PACKED_VERSION, size_hint, value)
}

/// [`encode_packed_sized`] behind the version byte `version` (2, or 3 for
/// a record that holds deltas): the same codecs follow.
pub(super) fn encode_versioned<T: Serialize>(
    version: u8,
    size_hint: usize,
    value: &T,
) -> Result<Vec<u8>, String> {
    let mut start = Vec::with_capacity(2 + size_hint);
    start.extend_from_slice(&[version, CODEC_RAW]);
    let raw = postcard::to_extend(value, start).map_err(|e| e.to_string())?;
    Ok(pack(version, &raw)?.unwrap_or(raw))
}

/// The largest scratch buffer [`encode_packed_scratch`] keeps between
/// calls.
const MAX_SCRATCH: usize = 64 << 20;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// [`encode_packed_sized`], the value encoded into this thread's scratch
/// buffer (kept up to [`MAX_SCRATCH`]) before it is compressed: for large
/// values (snapshots) written again and again, whose raw encoding in
/// fresh memory each time cost more in page faults than in encoding. The
/// same bytes as [`encode_packed_sized`].
pub(super) fn encode_packed_scratch<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    SCRATCH.with(|scratch| {
        let mut raw = scratch.take();
        raw.clear();
        raw.extend_from_slice(&[PACKED_VERSION, CODEC_RAW]);
        let raw = postcard::to_extend(value, raw).map_err(|e| e.to_string())?;
        let out = match pack(PACKED_VERSION, &raw)? {
            Some(packed) => packed,
            None => raw.clone(),
        };
        if raw.capacity() <= MAX_SCRATCH {
            scratch.replace(raw);
        }
        Ok(out)
    })
}

/// `raw` (a version byte, [`CODEC_RAW`], the body) compressed, when it is
/// long enough and compressing makes it shorter; `None`: store it raw.
fn pack(version: u8, raw: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let body = &raw[2..];
    if body.len() < COMPRESS_FROM || body.len() > u32::MAX as usize {
        return Ok(None);
    }
    let level = if body.len() < ZSTD_UP_TO {
        ZSTD_LEVEL
    } else {
        ZSTD_LARGE_LEVEL
    };
    let packed = zstd_compress(body, level).map_err(|e| format!("zstd: {e}"))?;
    if body.len() < ZSTD_UP_TO || packed.len().saturating_mul(MAX_ZSTD_RATIO) >= body.len() {
        let mut out = Vec::with_capacity(6 + packed.len());
        out.extend_from_slice(&[version, CODEC_ZSTD]);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&packed);
        return Ok((out.len() < raw.len()).then_some(out));
    }
    let mut out = Vec::with_capacity(6 + lz4_flex::block::get_maximum_output_size(body.len()));
    out.extend_from_slice(&[version, CODEC_LZ4]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let start = out.len();
    out.resize(
        start + lz4_flex::block::get_maximum_output_size(body.len()),
        0,
    );
    let n = lz4_flex::block::compress_into(body, &mut out[start..]).map_err(|e| e.to_string())?;
    out.truncate(start + n);
    Ok((out.len() < raw.len()).then_some(out))
}

/// The postcard body of a value of any version: borrowed for versions 1
/// and 2 raw, decompressed for LZ4.
pub(crate) fn body(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
    let (&version, rest) = bytes
        .split_first()
        .ok_or_else(|| DecodeError::Corrupt("empty value".into()))?;
    if version > VALUE_VERSION {
        return Err(DecodeError::Newer(version));
    }
    match version {
        0 => Err(DecodeError::Corrupt("format version byte is 0".into())),
        1 => Ok(std::borrow::Cow::Borrowed(rest)),
        _ => match rest.split_first() {
            Some((&CODEC_RAW, body)) => Ok(std::borrow::Cow::Borrowed(body)),
            Some((&CODEC_LZ4, packed)) => {
                let (len, block) = packed
                    .split_first_chunk::<4>()
                    .ok_or_else(|| DecodeError::Corrupt("LZ4 value without its length".into()))?;
                let len = u32::from_le_bytes(*len) as usize;
                if len > block.len().saturating_mul(MAX_LZ4_RATIO) + 64 {
                    return Err(DecodeError::Corrupt(format!(
                        "LZ4 value claims {len} bytes from {} compressed",
                        block.len()
                    )));
                }
                let out = lz4_flex::block::decompress(block, len)
                    .map_err(|e| DecodeError::Corrupt(format!("LZ4: {e}")))?;
                Ok(std::borrow::Cow::Owned(out))
            }
            Some((&CODEC_ZSTD, packed)) => {
                let (len, frame) = packed
                    .split_first_chunk::<4>()
                    .ok_or_else(|| DecodeError::Corrupt("zstd value without its length".into()))?;
                let len = u32::from_le_bytes(*len) as usize;
                // This build writes zstd past ZSTD_UP_TO only for values
                // that compress at most MAX_ZSTD_RATIO times: a larger
                // claim is a damaged value, refused before allocating.
                if len >= ZSTD_UP_TO && len > frame.len().saturating_mul(MAX_ZSTD_RATIO) {
                    return Err(DecodeError::Corrupt(format!(
                        "zstd value claims {len} bytes, more than such a value holds"
                    )));
                }
                let out = zstd_decompress(frame, len)
                    .map_err(|e| DecodeError::Corrupt(format!("zstd: {e}")))?;
                if out.len() != len {
                    return Err(DecodeError::Corrupt(format!(
                        "zstd value holds {} bytes, its length says {len}",
                        out.len()
                    )));
                }
                Ok(std::borrow::Cow::Owned(out))
            }
            Some((&CODEC_COLUMNS, payload)) if version == COLUMNS_VERSION => {
                columnar::decode_record(payload).map(std::borrow::Cow::Owned)
            }
            Some((&super::CODEC_PARTS, _)) => Err(DecodeError::Corrupt(
                "a value stored in parts was read without its parts".into(),
            )),
            Some((codec, _)) => Err(DecodeError::Corrupt(format!("unknown codec byte {codec}"))),
            None => Err(DecodeError::Corrupt("value without its codec byte".into())),
        },
    }
}

/// The payload of a stored record laid out by column (what follows its
/// version and codec bytes); `None` for a value stored otherwise.
pub(crate) fn columnar_payload(bytes: &[u8]) -> Option<&[u8]> {
    match bytes {
        [COLUMNS_VERSION, CODEC_COLUMNS, payload @ ..] => Some(payload),
        _ => None,
    }
}

/// `bytes` as one zstd frame at `level`, through this thread's context.
pub(super) fn zstd_compress(bytes: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        if z.0.is_none() {
            z.0 = Some(zstd::bulk::Compressor::new(level)?);
        }
        match z.0.as_mut() {
            Some(c) => {
                c.set_compression_level(level)?;
                c.compress(bytes)
            }
            None => Ok(Vec::new()),
        }
    })
}

/// One zstd frame of at most `capacity` bytes decompressed, through this
/// thread's context. Errors on a damaged frame or one that holds more.
pub(super) fn zstd_decompress(frame: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        if z.1.is_none() {
            z.1 = Some(zstd::bulk::Decompressor::new()?);
        }
        match z.1.as_mut() {
            Some(d) => d.decompress(frame, capacity),
            None => Ok(Vec::new()),
        }
    })
}

pub(super) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let body = body(bytes)?;
    take_whole(&body)
}

/// The postcard value that is the whole of `body` (a decoded value's
/// body), borrowing from it; bytes left after it are damage.
pub(crate) fn take_whole<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    nothing_left(rest)?;
    Ok(value)
}

/// Refuses bytes left after a value: a damaged or foreign value.
pub(crate) fn nothing_left(rest: &[u8]) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Corrupt(format!(
            "{} unexpected bytes after the value",
            rest.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use autoresearch_core::ComponentRecord;

    fn big_record() -> TickRecord {
        TickRecord {
            tick: Tick(3),
            at_ms: 9,
            changes: (0..200)
                .flat_map(|e| {
                    [
                        Change::Spawn {
                            entity: EntityId(e),
                        },
                        Change::Set {
                            entity: EntityId(e),
                            component: "Run".into(),
                            value: format!("https://github.com/example/run-{e}.git running")
                                .into_bytes(),
                        },
                    ]
                })
                .collect(),
        }
    }

    /// A record whose body is past [`ZSTD_UP_TO`].
    fn huge_record() -> TickRecord {
        TickRecord {
            tick: Tick(3),
            at_ms: 9,
            changes: (0..8000)
                .map(|e| Change::Set {
                    entity: EntityId(e),
                    component: "Run".into(),
                    value: format!("https://github.com/example/run-{e}.git running").into_bytes(),
                })
                .collect(),
        }
    }

    /// A record past [`ZSTD_UP_TO`] that compresses past
    /// [`MAX_ZSTD_RATIO`]: one megabyte of zeros.
    fn flat_record() -> TickRecord {
        TickRecord {
            tick: Tick(3),
            at_ms: 9,
            changes: vec![Change::Set {
                entity: EntityId(1),
                component: "Blob".into(),
                value: vec![0; 1 << 20],
            }],
        }
    }

    #[test]
    fn large_records_are_stored_compressed_and_read_back() {
        let rec = big_record();
        let plain = postcard::to_stdvec(&rec.changes.len()).unwrap().len();
        let bytes = encode_record(rec.clone()).unwrap();
        assert_eq!(bytes[..2], [PACKED_VERSION, CODEC_ZSTD]);
        let raw = postcard::to_stdvec(&RecordV1 {
            at_ms: 9,
            changes: Vec::new(),
        })
        .unwrap();
        assert!(
            raw.len() + plain < bytes.len(),
            "sanity: it holds something"
        );
        assert!(
            bytes.len() * 3 < 200 * 45,
            "{} bytes: not compressed",
            bytes.len()
        );
        assert_eq!(decode_record(Tick(3), &bytes).unwrap(), rec);
        // A record past ZSTD_UP_TO is zstd too (its fast level), and may
        // claim more than ZSTD_UP_TO.
        let huge = huge_record();
        // (Row-wise: a record of that many changes is otherwise laid out
        // by column.)
        let bytes = encode_record_rows(huge.clone()).unwrap();
        assert_eq!(bytes[..2], [PACKED_VERSION, CODEC_ZSTD]);
        assert!(u32::from_le_bytes(bytes[2..6].try_into().unwrap()) as usize > ZSTD_UP_TO);
        assert_eq!(decode_record(Tick(3), &bytes).unwrap(), huge);
        let mut claims_more = bytes.clone();
        claims_more[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            matches!(decode_record(Tick(3), &claims_more), Err(DecodeError::Corrupt(r)) if r.contains("claims"))
        );
        // One that compresses more than MAX_ZSTD_RATIO times is LZ4.
        let flat = flat_record();
        let bytes = encode_record(flat.clone()).unwrap();
        assert_eq!(bytes[..2], [PACKED_VERSION, CODEC_LZ4]);
        assert_eq!(decode_record(Tick(3), &bytes).unwrap(), flat);
        // A small record stays raw.
        let small = TickRecord {
            tick: Tick(1),
            at_ms: 1,
            changes: vec![Change::Spawn {
                entity: EntityId(1),
            }],
        };
        let bytes = encode_record(small.clone()).unwrap();
        assert_eq!(bytes[..2], [PACKED_VERSION, CODEC_RAW]);
        assert_eq!(decode_record(Tick(1), &bytes).unwrap(), small);
    }

    #[test]
    fn version_1_values_written_by_older_builds_still_decode() {
        let rec = big_record();
        let v1 = encode(&RecordV1 {
            at_ms: rec.at_ms,
            changes: rec.changes.iter().cloned().map(ChangeV1::from).collect(),
        })
        .unwrap();
        assert_eq!(v1[0], 1);
        assert_eq!(decode_record(Tick(3), &v1).unwrap(), rec);
        // The in-place projection reads version 1 and 2 (raw, LZ4, zstd)
        // alike.
        let v2 = encode_record(rec.clone()).unwrap();
        assert_eq!(v2[..2], [PACKED_VERSION, CODEC_ZSTD]);
        let lz4 = {
            // The LZ4 shape of format 3, built by hand.
            let raw = postcard::to_stdvec(&RecordV1 {
                at_ms: rec.at_ms,
                changes: rec.changes.iter().cloned().map(ChangeV1::from).collect(),
            })
            .unwrap();
            let mut out = vec![PACKED_VERSION, CODEC_LZ4];
            out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            out.extend_from_slice(&lz4_flex::block::compress(&raw));
            out
        };
        assert_eq!(decode_record(Tick(3), &lz4).unwrap(), rec);
        for bytes in [&v1, &v2, &lz4] {
            assert_eq!(
                decode_component_record(Tick(3), bytes, "Run").unwrap(),
                ComponentRecord::project(rec.clone(), "Run")
            );
        }
        let cut = &v2[..v2.len() - 3];
        assert!(matches!(
            decode_component_record(Tick(3), cut, "Run"),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn damaged_zstd_values_are_corrupt_not_a_panic_or_a_huge_allocation() {
        let bytes = encode_record(big_record()).unwrap();
        assert_eq!(bytes[1], CODEC_ZSTD);
        let mut huge = bytes.clone();
        huge[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            matches!(decode_record(Tick(3), &huge), Err(DecodeError::Corrupt(r)) if r.contains("claims"))
        );
        // A length shorter or longer than the frame holds.
        for claim in [10u32, 200 * 60] {
            let mut wrong = bytes.clone();
            wrong[2..6].copy_from_slice(&claim.to_le_bytes());
            assert!(matches!(
                decode_record(Tick(3), &wrong),
                Err(DecodeError::Corrupt(_))
            ));
        }
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            decode_record(Tick(3), cut),
            Err(DecodeError::Corrupt(_))
        ));
        assert!(matches!(
            decode_record(Tick(3), &bytes[..4]),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn damaged_compressed_values_are_corrupt_not_a_panic_or_a_huge_allocation() {
        let bytes = encode_record(flat_record()).unwrap();
        assert_eq!(bytes[1], CODEC_LZ4);
        // A length far beyond what the block can expand to.
        let mut huge = bytes.clone();
        huge[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            matches!(decode_record(Tick(3), &huge), Err(DecodeError::Corrupt(r)) if r.contains("claims"))
        );
        // A cut block.
        let cut = &bytes[..bytes.len() / 2];
        assert!(matches!(
            decode_record(Tick(3), cut),
            Err(DecodeError::Corrupt(_))
        ));
        // An unknown codec.
        let mut odd = bytes.clone();
        odd[1] = 9;
        assert!(
            matches!(decode_record(Tick(3), &odd), Err(DecodeError::Corrupt(r)) if r.contains("codec"))
        );
        assert!(matches!(
            decode_record(Tick(3), &[PACKED_VERSION]),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
