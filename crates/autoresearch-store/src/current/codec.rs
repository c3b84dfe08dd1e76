//! The byte encodings of the current-state values: pointer blocks
//! (`current_ticks`), front-coded key chunks (`current_index`) and the
//! tally (`current_tally`). A value of another version, or one that does
//! not parse, decodes to `None`.

use autoresearch_core::current::Tally;

/// Entries per `current_index` chunk at most.
pub(super) const CHUNK: usize = 64;

/// The version tag that starts a `current_index` value. Then, for each
/// `(key, entity)` of the chunk, ascending: the length of the prefix it
/// shares with the previous key, the length of the rest and the rest
/// (LEB128, LEB128, UTF-8), then the entity (LEB128), as the difference
/// from the previous entity when the key is the previous one. A value of
/// another version or that does not parse is not read (as pointers).
const CHUNK_VERSION: u8 = 1;

/// A decoded `current_index` value: `(key, entity)` ascending.
pub(super) type KeyChunk = Vec<(String, u64)>;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn take_varint(rest: &mut &[u8]) -> Option<u64> {
    let (mut v, mut shift) = (0u64, 0u32);
    loop {
        let (&byte, after) = rest.split_first()?;
        *rest = after;
        if shift > 63 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
}

pub(super) fn encode_chunk(chunk: &[(String, u64)]) -> Vec<u8> {
    let mut out = vec![CHUNK_VERSION];
    let mut prev: Option<&(String, u64)> = None;
    for entry in chunk {
        let (key, e) = entry;
        let shared = prev.map_or(0, |(p, _)| {
            p.bytes()
                .zip(key.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        });
        put_varint(&mut out, shared as u64);
        put_varint(&mut out, (key.len() - shared) as u64);
        out.extend_from_slice(&key.as_bytes()[shared..]);
        match prev {
            Some((p, pe)) if p == key => put_varint(&mut out, e - pe),
            _ => put_varint(&mut out, *e),
        }
        prev = Some(entry);
    }
    out
}

pub(super) fn decode_chunk(bytes: &[u8]) -> Option<KeyChunk> {
    let (&CHUNK_VERSION, mut rest) = bytes.split_first()? else {
        return None;
    };
    let mut out: KeyChunk = Vec::new();
    while !rest.is_empty() {
        let shared = usize::try_from(take_varint(&mut rest)?).ok()?;
        let len = usize::try_from(take_varint(&mut rest)?).ok()?;
        let prev = out.last().map_or("", |(k, _)| k.as_str());
        if shared > prev.len() || len > rest.len() {
            return None;
        }
        let mut key = prev.as_bytes()[..shared].to_vec();
        key.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
        let key = String::from_utf8(key).ok()?;
        let v = take_varint(&mut rest)?;
        let e = match out.last() {
            Some((p, pe)) if *p == key => pe.checked_add(v)?,
            _ => v,
        };
        if out
            .last()
            .is_some_and(|(p, pe)| (p.as_str(), *pe) >= (key.as_str(), e))
        {
            return None;
        }
        out.push((key, e));
    }
    Some(out)
}

/// The version tag that starts a `current_tally` value (then the
/// postcard of core's `Tally`). A value of another version is not read:
/// the world's reads fall back to materializing, and a writer stops
/// keeping its current state.
const TALLY_VERSION: u8 = 1;

pub(super) fn encode_tally(t: &Tally) -> Option<Vec<u8>> {
    postcard::to_extend(t, vec![TALLY_VERSION]).ok()
}

pub(super) fn decode_tally(bytes: &[u8]) -> Option<Tally> {
    match bytes.split_first() {
        Some((&TALLY_VERSION, body)) => postcard::from_bytes(body).ok(),
        _ => None,
    }
}

/// Entities per `current_ticks` entry.
pub(super) const BLOCK: u64 = 64;

/// The version tag that starts a `current_ticks` value. Then, for each
/// entity of the block holding the component, ascending: its offset in
/// the block (one byte, `entity - block * 64`) and the tick that set its
/// value (LEB128). A value of another version, or one that does not
/// parse, is not read: reads fall back to materializing and a writer
/// stops keeping the world's current state.
const POINTER_VERSION: u8 = 1;

/// A decoded `current_ticks` value: `(offset, tick)`, ascending offsets.
pub(super) type PointerBlock = Vec<(u8, u64)>;

pub(super) fn encode_block(block: &PointerBlock) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + block.len() * 3);
    out.push(POINTER_VERSION);
    for &(offset, mut tick) in block {
        out.push(offset);
        loop {
            let byte = (tick & 0x7f) as u8;
            tick >>= 7;
            if tick == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    out
}

pub(super) fn decode_block(bytes: &[u8]) -> Option<PointerBlock> {
    let (&POINTER_VERSION, mut rest) = bytes.split_first()? else {
        return None;
    };
    let mut out = Vec::new();
    while let Some((&offset, after)) = rest.split_first() {
        if offset as u64 >= BLOCK || out.last().is_some_and(|(o, _)| *o >= offset) {
            return None;
        }
        let (mut tick, mut shift) = (0u64, 0u32);
        rest = after;
        loop {
            let (&byte, after) = rest.split_first()?;
            rest = after;
            if shift > 63 {
                return None;
            }
            tick |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        out.push((offset, tick));
    }
    Some(out)
}

pub(super) fn slot(e: u64) -> (u64, u8) {
    (e / BLOCK, (e % BLOCK) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_blocks_round_trip_and_damage_is_refused() {
        let block: PointerBlock = vec![(0, 1), (5, 300), (63, u64::MAX)];
        let bytes = encode_block(&block);
        assert_eq!(bytes[0], POINTER_VERSION);
        assert_eq!(decode_block(&bytes), Some(block));
        assert_eq!(decode_block(&[POINTER_VERSION]), Some(Vec::new()));
        // Another version, a cut tick, an offset out of the block, and
        // offsets out of order are not read.
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(decode_block(&other), None);
        assert_eq!(decode_block(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_block(&[POINTER_VERSION, 64, 1]), None);
        assert_eq!(decode_block(&[POINTER_VERSION, 3, 1, 2, 1]), None);
        assert_eq!(decode_block(&[]), None);
    }

    #[test]
    fn key_chunks_round_trip_front_coded_and_damage_is_refused() {
        let chunk: KeyChunk = vec![
            ("".into(), 4),
            ("nanogpt".into(), 1),
            ("nanogpt".into(), 900),
            ("nanogpt-speedrun".into(), 2),
            ("r1".into(), 3),
            ("r10".into(), 0),
            ("é-run".into(), u64::MAX),
        ];
        let bytes = encode_chunk(&chunk);
        assert_eq!(bytes[0], CHUNK_VERSION);
        assert_eq!(decode_chunk(&bytes), Some(chunk.clone()));
        // A repeated key costs its entity only: far less than the text.
        let same: KeyChunk = (0..64).map(|e| ("nanogpt-speedrun".into(), e)).collect();
        assert!(encode_chunk(&same).len() < 64 * 4 + 20);
        assert_eq!(decode_chunk(&encode_chunk(&same)), Some(same));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(decode_chunk(&other), None);
        assert_eq!(decode_chunk(&bytes[..bytes.len() - 1]), None);
        // Entries out of order (a repeated entry) are refused.
        let twice = [CHUNK_VERSION, 0, 1, b'a', 5, 1, 0, 0];
        assert_eq!(decode_chunk(&twice[..5]), Some(vec![("a".into(), 5)]));
        assert_eq!(decode_chunk(&twice), None);
        let down = [CHUNK_VERSION, 0, 1, b'b', 5, 0, 1, b'a', 6];
        assert_eq!(decode_chunk(&down), None);
    }
}
