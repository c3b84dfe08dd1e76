//! The byte encodings of the current-state values: pointer blocks
//! (`current_ticks`), front-coded key chunks (`current_index`) and the
//! tally (`current_tally`). A value of another version, or one that does
//! not parse, decodes to `None`.

use autoresearch_core::current::Tally;

/// Entries per `current_index` chunk at most.
pub(super) const CHUNK: usize = 64;

/// The version tag of the first `current_index` value layout, still
/// read. Then, for each `(key, entity)` of the chunk, ascending: the
/// length of the prefix it shares with the previous key, the length of
/// the rest and the rest (LEB128, LEB128, UTF-8), then the entity
/// (LEB128), as the difference from the previous entity when the key is
/// the previous one.
const CHUNK_V1: u8 = 1;

/// The version tag of the `current_index` values this build writes:
/// `[2, n, alphabet (n bytes), entries (LEB128), then the key bytes]`.
/// For each `(key, entity)`, ascending: `0` when the key is the previous
/// one, then the entity's difference from the previous; else the length
/// of the prefix it shares with the previous key plus one, the length of
/// the rest, and the entity. After the last entry, every key's rest, in
/// order, each byte as its position in the alphabet (the distinct bytes
/// of the rests, ascending) in `bits(n)` bits, packed from the low bit of
/// each byte up; `n = 0` means no alphabet, 8 bits a byte. A run id of
/// hexadecimal digits and `-` then costs 5 bits a character, not 8. A
/// value of another version or that does not parse is not read (as
/// pointers).
const CHUNK_V2: u8 = 2;

/// The bits each key byte takes with an alphabet of `n` bytes (`0`: none).
fn bits(n: usize) -> u32 {
    match n {
        0 => 8,
        1 => 1,
        n => usize::BITS - (n - 1).leading_zeros(),
    }
}

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

/// The length of the prefix `a` and `b` share, in bytes, at a character
/// boundary of both.
fn shared_prefix(a: &str, b: &str) -> usize {
    let mut n = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    while !(a.is_char_boundary(n) && b.is_char_boundary(n)) {
        n -= 1;
    }
    n
}

pub(super) fn encode_chunk<K: AsRef<str>>(chunk: &[(K, u64)]) -> Vec<u8> {
    let mut head = Vec::with_capacity(chunk.len() * 4);
    let mut rests: Vec<&[u8]> = Vec::with_capacity(chunk.len());
    let mut present = [false; 256];
    let mut prev: Option<(&str, u64)> = None;
    for (key, e) in chunk {
        let key = key.as_ref();
        match prev {
            Some((p, pe)) if p == key => {
                put_varint(&mut head, 0);
                put_varint(&mut head, e - pe);
            }
            _ => {
                let shared = prev.map_or(0, |(p, _)| shared_prefix(p, key));
                let rest = &key.as_bytes()[shared..];
                put_varint(&mut head, shared as u64 + 1);
                put_varint(&mut head, rest.len() as u64);
                put_varint(&mut head, *e);
                for &b in rest {
                    present[usize::from(b)] = true;
                }
                rests.push(rest);
            }
        }
        prev = Some((key, *e));
    }
    let alphabet: Vec<u8> = (0..=255u8).filter(|b| present[usize::from(*b)]).collect();
    // An alphabet of 128 bytes or more saves nothing.
    let alphabet = if alphabet.len() >= 128 {
        Vec::new()
    } else {
        alphabet
    };
    let mut code = [0u8; 256];
    for (i, b) in alphabet.iter().enumerate() {
        code[usize::from(*b)] = i as u8;
    }
    let width = bits(alphabet.len());
    let mut out = Vec::with_capacity(2 + alphabet.len() + head.len() + rests.len() * 16);
    out.push(CHUNK_V2);
    out.push(alphabet.len() as u8);
    out.extend_from_slice(&alphabet);
    out.extend_from_slice(&head);
    let (mut acc, mut filled) = (0u64, 0u32);
    for &b in rests.iter().flat_map(|r| r.iter()) {
        let symbol = if alphabet.is_empty() {
            b
        } else {
            code[usize::from(b)]
        };
        acc |= u64::from(symbol) << filled;
        filled += width;
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(acc as u8);
    }
    out
}

pub(super) fn decode_chunk(bytes: &[u8]) -> Option<KeyChunk> {
    match bytes.split_first()? {
        (&CHUNK_V1, rest) => decode_v1(rest),
        (&CHUNK_V2, rest) => decode_v2(rest),
        _ => None,
    }
}

fn decode_v1(mut rest: &[u8]) -> Option<KeyChunk> {
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
        push_sorted(&mut out, key, e)?;
    }
    Some(out)
}

/// Appends `(key, e)`, refusing entries out of order (or repeated).
fn push_sorted(out: &mut KeyChunk, key: String, e: u64) -> Option<()> {
    if out
        .last()
        .is_some_and(|(p, pe)| (p.as_str(), *pe) >= (key.as_str(), e))
    {
        return None;
    }
    out.push((key, e));
    Some(())
}

/// One entry of a layout 2 chunk before its key bytes are unpacked.
enum Entry {
    /// The previous key; the entity's difference from the previous.
    Same(u64),
    /// Shared prefix length, rest length, entity.
    New(usize, usize, u64),
}

fn decode_v2(rest: &[u8]) -> Option<KeyChunk> {
    let (&n, rest) = rest.split_first()?;
    let n = usize::from(n);
    if rest.len() < n {
        return None;
    }
    let (alphabet, mut rest) = rest.split_at(n);
    let width = bits(n);
    // The entries' numbers come first; the packed key bytes are the bytes
    // after them, as many as the sum of the rests' lengths needs.
    let mut entries = Vec::new();
    let mut symbols = 0u64;
    loop {
        // A damaged count of symbols must not overflow.
        let packed = symbols.checked_mul(u64::from(width))?.div_ceil(8);
        if rest.len() as u64 == packed {
            break;
        }
        if (rest.len() as u64) < packed {
            return None;
        }
        let s = take_varint(&mut rest)?;
        if s == 0 {
            if entries.is_empty() {
                return None;
            }
            entries.push(Entry::Same(take_varint(&mut rest)?));
        } else {
            let shared = usize::try_from(s - 1).ok()?;
            let len = take_varint(&mut rest)?;
            symbols = symbols.checked_add(len)?;
            let len = usize::try_from(len).ok()?;
            entries.push(Entry::New(shared, len, take_varint(&mut rest)?));
        }
    }
    let mut out: KeyChunk = Vec::with_capacity(entries.len());
    let (mut acc, mut filled) = (0u64, 0u32);
    let mask = (1u64 << width) - 1;
    let mut packed = rest.iter();
    for entry in entries {
        match entry {
            Entry::Same(delta) => {
                let (p, pe) = out.last()?;
                let (key, e) = (p.clone(), pe.checked_add(delta)?);
                push_sorted(&mut out, key, e)?;
            }
            Entry::New(shared, len, e) => {
                let prev = out.last().map_or("", |(k, _)| k.as_str());
                if shared > prev.len() {
                    return None;
                }
                let mut key = prev.as_bytes()[..shared].to_vec();
                for _ in 0..len {
                    while filled < width {
                        acc |= u64::from(*packed.next()?) << filled;
                        filled += 8;
                    }
                    let symbol = (acc & mask) as usize;
                    acc >>= width;
                    filled -= width;
                    key.push(if n == 0 {
                        symbol as u8
                    } else {
                        *alphabet.get(symbol)?
                    });
                }
                let key = String::from_utf8(key).ok()?;
                push_sorted(&mut out, key, e)?;
            }
        }
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

/// The version tag that starts a world's state row (the `current_pending`
/// entry at [`STATE_KEY`]): then the tick the current state is after
/// (`u64` little-endian) and the world's tally as a `current_tally` value
/// ([`encode_tally`]). It is not the pending changes' version (1), so a
/// build that reads every entry of a world's range as pending changes
/// (one from before the state row) finds one that does not decode and
/// falls back to materializing.
///
/// [`STATE_KEY`]: super::STATE_KEY
const STATE_VERSION: u8 = 2;

/// A world's state row: the tick its current state is after, and its
/// tally as encoded by [`encode_tally`].
pub(super) fn encode_state(head: u64, tally: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 8 + tally.len());
    out.push(STATE_VERSION);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(tally);
    out
}

/// The head tick and the encoded tally of a state row; `None` when it is
/// of another version or too short.
pub(super) fn decode_state(bytes: &[u8]) -> Option<(u64, &[u8])> {
    match bytes.split_first() {
        Some((&STATE_VERSION, rest)) if rest.len() >= 8 => {
            let (head, tally) = rest.split_at(8);
            Some((u64::from_le_bytes(head.try_into().ok()?), tally))
        }
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
    // Each entry takes two bytes at least.
    let mut out = Vec::with_capacity(rest.len() / 2);
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
    fn run_ids_of_hex_digits_take_five_bits_a_character() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut chunk: KeyChunk = (0..64u64)
            .map(|i| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (format!("{x:016x}-{i:07}"), i * 37 % 1000)
            })
            .collect();
        chunk.sort();
        let bytes = encode_chunk(&chunk);
        assert_eq!(decode_chunk(&bytes), Some(chunk.clone()));
        // An alphabet of 17 bytes (hex digits and '-'), then at most 4
        // bytes of numbers an entry and 5 bits a character: 1,235 bytes at
        // most, where the text alone is 1,536.
        let text: usize = chunk.iter().map(|(k, _)| k.len()).sum();
        assert_eq!(text, 1_536);
        assert_eq!(bytes[1], 17);
        assert!(
            bytes.len() <= 2 + 17 + 64 * 4 + 960,
            "{} bytes",
            bytes.len()
        );
        // Keys of any bytes (an alphabet of 128 or more) round trip.
        let wide: KeyChunk = (0..400u32)
            .filter_map(char::from_u32)
            .map(|c| (format!("k{c}"), 1))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(decode_chunk(&encode_chunk(&wide)), Some(wide));
        // Multi-byte characters sharing their first byte.
        let close: KeyChunk = vec![("é".into(), 1), ("ê".into(), 1)];
        assert_eq!(decode_chunk(&encode_chunk(&close)), Some(close));
    }

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
        assert_eq!(bytes[0], CHUNK_V2);
        assert_eq!(decode_chunk(&bytes), Some(chunk.clone()));
        // A repeated key costs its entity only: far less than the text.
        let same: KeyChunk = (0..64).map(|e| ("nanogpt-speedrun".into(), e)).collect();
        assert!(encode_chunk(&same).len() < 64 * 4 + 20);
        assert_eq!(decode_chunk(&encode_chunk(&same)), Some(same));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(decode_chunk(&other), None);
        for cut in 1..bytes.len() {
            assert_ne!(
                decode_chunk(&bytes[..cut]),
                Some(chunk.clone()),
                "cut at {cut}"
            );
        }
        assert_eq!(decode_chunk(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_chunk(&encode_chunk::<String>(&[])), Some(Vec::new()));
        // The first layout is still read. Entries out of order (a
        // repeated entry) are refused.
        let twice = [CHUNK_V1, 0, 1, b'a', 5, 1, 0, 0];
        assert_eq!(decode_chunk(&twice[..5]), Some(vec![("a".into(), 5)]));
        assert_eq!(decode_chunk(&twice), None);
        let down = [CHUNK_V1, 0, 1, b'b', 5, 0, 1, b'a', 6];
        assert_eq!(decode_chunk(&down), None);
        // In this layout too: "b" then "a" (alphabet a, b: a bit each).
        let down = [CHUNK_V2, 2, b'a', b'b', 1, 1, 5, 1, 1, 6, 0b01];
        assert_eq!(decode_chunk(&down), None);
        let up = [CHUNK_V2, 2, b'a', b'b', 1, 1, 5, 1, 1, 6, 0b10];
        assert_eq!(
            decode_chunk(&up),
            Some(vec![("a".into(), 5), ("b".into(), 6)])
        );
        // A byte past the packed keys is refused.
        assert_eq!(decode_chunk(&[&up[..], &[0]].concat()), None);
    }

    #[test]
    fn a_damaged_symbol_count_is_refused_not_an_overflow() {
        // Found by `any_chunk_round_trips` in CI: a rest length of about
        // 2^62 symbols of 5 bits overflowed the packed-byte count.
        let mut bytes = vec![CHUNK_V2, 20];
        bytes.extend_from_slice(&[0; 20]);
        bytes.extend_from_slice(&[128, 128, 128, 128, 128, 128, 1]);
        bytes.extend_from_slice(&[128, 128, 128, 128, 128, 128, 128, 128, 52, 0]);
        assert_eq!(decode_chunk(&bytes), None);
    }

    proptest::proptest! {
        /// Any sorted chunk round trips, whatever its keys' bytes; any
        /// bytes decode to a chunk or to `None`, never a panic.
        #[test]
        fn any_chunk_round_trips(
            entries in proptest::collection::btree_set(
                (proptest::prop_oneof!["[0-9a-f-]{0,24}", ".{0,6}", "r[0-9]{0,3}"], 0u64..u64::MAX),
                0..150,
            ),
            noise in proptest::collection::vec(0u8..=255, 0..64),
        ) {
            let chunk: KeyChunk = entries.into_iter().collect();
            let bytes = encode_chunk(&chunk);
            proptest::prop_assert_eq!(decode_chunk(&bytes), Some(chunk));
            let _ = decode_chunk(&[&[CHUNK_V2][..], &noise].concat());
            let _ = decode_chunk(&[&[CHUNK_V1][..], &noise].concat());
        }
    }
}
