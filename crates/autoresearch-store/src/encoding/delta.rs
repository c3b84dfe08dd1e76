//! Values changed in place, stored as deltas (file format 5).
//!
//! A `Set` of a component an entity already had, whose new value shares a
//! long prefix and suffix with the old one (a status change rewrites a few
//! bytes of a 330-byte `Run`), is stored as `SetDelta`: the tick that set
//! the old value (its *base*), the lengths of the common prefix and
//! suffix, and the bytes between them. The value is the base value's
//! prefix, the middle, then the base value's suffix. The base may be any
//! older tick that set the value, not only the latest: the writer takes
//! the tick of the whole value a chain starts from when the delta stays
//! small (`stored::LastSets`), so that a read resolves a delta with one
//! base record. A base is itself whole or a delta of an older tick; the
//! writer bounds these chains ([`MAX_CHAIN`]), and a reader follows any
//! chain up to [`READ_CHAIN`] (files written before this rule hold chains
//! of up to [`MAX_CHAIN`] deltas, each of the tick before). A record that holds a delta is a [`RecordV2`] behind
//! version byte 3; `stored` rewrites it as the whole record before any
//! reader sees it.
//!
//! [`RecordV2`]: super::RecordV2

use super::DecodeError;

/// The longest chain of deltas the writer makes: the value `MAX_CHAIN`
/// deltas away from a whole one is written whole. Readers refuse a chain
/// longer than [`READ_CHAIN`].
pub(crate) const MAX_CHAIN: u8 = 8;

/// The longest chain a reader follows before calling the record damaged.
pub(crate) const READ_CHAIN: usize = 64;

/// The delta from `old` to `new`: `(prefix, suffix, middle)`, `None` when
/// it would not take less than half of `new`.
pub(crate) fn diff<'n>(old: &[u8], new: &'n [u8]) -> Option<(u32, u32, &'n [u8])> {
    let prefix = common_prefix(old, new);
    let max_suffix = old.len().min(new.len()) - prefix;
    let suffix = common_suffix(&old[prefix..], &new[prefix..]).min(max_suffix);
    let middle = &new[prefix..new.len() - suffix];
    // A delta costs its middle and about 16 bytes of base and lengths.
    (middle.len() + 16 < new.len() / 2).then_some((
        u32::try_from(prefix).ok()?,
        u32::try_from(suffix).ok()?,
        middle,
    ))
}

/// The length of the longest common prefix of `a` and `b`, compared
/// eight bytes at a time (the writer diffs every `Set` it stores against
/// the value it replaces).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        if x != y {
            // The first differing byte is the lowest differing one.
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..n]
        .iter()
        .zip(&b[i..n])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The length of the longest common suffix of `a` and `b`, compared
/// eight bytes at a time.
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut k = 0;
    while k + 8 <= n {
        let (ea, eb) = (n - k - 8, n - k);
        let x = u64::from_le_bytes(a[ea..eb].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[ea..eb].try_into().unwrap_or([0; 8]));
        if x != y {
            // The last differing byte is the highest differing one.
            return k + ((x ^ y).leading_zeros() / 8) as usize;
        }
        k += 8;
    }
    k + a[..n - k]
        .iter()
        .rev()
        .zip(b[..n - k].iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// The value a delta stands for, given its base value. Errors when the
/// base is shorter than the prefix and suffix the delta keeps of it.
pub(crate) fn apply(
    base: &[u8],
    prefix: u32,
    suffix: u32,
    middle: &[u8],
) -> Result<Vec<u8>, DecodeError> {
    let (prefix, suffix) = (prefix as usize, suffix as usize);
    if prefix.saturating_add(suffix) > base.len() {
        return Err(DecodeError::Corrupt(format!(
            "a delta keeps {prefix} + {suffix} bytes of a base value of {}",
            base.len()
        )));
    }
    let mut out = Vec::with_capacity(prefix + middle.len() + suffix);
    out.extend_from_slice(&base[..prefix]);
    out.extend_from_slice(middle);
    out.extend_from_slice(&base[base.len() - suffix..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-wise prefix and suffix equal a byte-by-byte count, on
    /// lengths around the word size and differences at every position.
    #[test]
    fn common_ends_equal_a_byte_count() {
        let slow_prefix = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let slow_suffix = |a: &[u8], b: &[u8]| {
            a.iter()
                .rev()
                .zip(b.iter().rev())
                .take_while(|(x, y)| x == y)
                .count()
        };
        for len in [0usize, 1, 7, 8, 9, 15, 16, 17, 40] {
            let a: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            for other in [len.saturating_sub(3), len, len + 5] {
                let mut b: Vec<u8> = (0..other).map(|i| (i * 7 % 251) as u8).collect();
                assert_eq!(common_prefix(&a, &b), slow_prefix(&a, &b), "{len} {other}");
                assert_eq!(common_suffix(&a, &b), slow_suffix(&a, &b), "{len} {other}");
                for at in 0..other {
                    b[at] ^= 0x10;
                    assert_eq!(
                        common_prefix(&a, &b),
                        slow_prefix(&a, &b),
                        "{len} {other} {at}"
                    );
                    assert_eq!(
                        common_suffix(&a, &b),
                        slow_suffix(&a, &b),
                        "{len} {other} {at}"
                    );
                    b[at] ^= 0x10;
                }
            }
        }
    }

    #[test]
    fn a_small_change_is_a_small_delta_and_a_large_one_none() {
        let old = b"run-1 experiment vm running claude https://example.com main task".to_vec();
        let new = b"run-1 experiment vm stopping claude https://example.com main task".to_vec();
        let (p, s, m) = diff(&old, &new).unwrap();
        assert_eq!(m, b"stopp");
        assert_eq!(apply(&old, p, s, m).unwrap(), new);
        assert!(diff(b"abcdef", b"uvwxyz").is_none());
        assert!(matches!(
            apply(b"ab", 2, 1, b""),
            Err(DecodeError::Corrupt(r)) if r.contains("keeps")
        ));
    }

    proptest::proptest! {
        /// A delta, applied to its base, is the new value.
        #[test]
        fn a_delta_applied_to_its_base_is_the_new_value(
            old in proptest::collection::vec(0u8..4, 0..400),
            cut in 0usize..400,
            len in 0usize..40,
            insert in proptest::collection::vec(0u8..4, 0..40),
        ) {
            let cut = cut.min(old.len());
            let end = (cut + len).min(old.len());
            let mut new = old[..cut].to_vec();
            new.extend_from_slice(&insert);
            new.extend_from_slice(&old[end..]);
            if let Some((p, s, m)) = diff(&old, &new) {
                proptest::prop_assert_eq!(apply(&old, p, s, m).unwrap(), new);
            }
        }
    }
}
