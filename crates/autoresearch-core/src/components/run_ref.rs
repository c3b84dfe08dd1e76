//! [`RunRef`]: a [`Run`] read from its stored bytes without copying its
//! text, and the hand-written fast path of its decoding.

use super::Run;
use serde::{Deserialize, Serialize};

/// A [`Run`] borrowing its text from the stored bytes: decodes exactly
/// what a `Run` encodes (same fields, same order) without allocating a
/// string per field, for reads over many runs
/// ([`crate::ledger::component_bytes_at`] then `postcard::from_bytes`).
/// [`RunRef::to_run`] names every field of `Run`, so a field added there
/// breaks the build here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef<'a> {
    /// As [`Run::run_id`].
    pub run_id: &'a str,
    /// As [`Run::experiment_name`].
    pub experiment_name: &'a str,
    /// As [`Run::vm_name`].
    pub vm_name: &'a str,
    /// As [`Run::status`].
    pub status: &'a str,
    /// As [`Run::harness`].
    pub harness: &'a str,
    /// As [`Run::repo_url`].
    pub repo_url: &'a str,
    /// As [`Run::branch`].
    pub branch: &'a str,
    /// As [`Run::task`].
    pub task: &'a str,
    /// As [`Run::started_at_ms`].
    pub started_at_ms: i64,
    /// As [`Run::finished_at_ms`].
    pub finished_at_ms: i64,
    /// As [`Run::agent_name`].
    pub agent_name: &'a str,
    /// As [`Run::workspace_path`].
    pub workspace_path: &'a str,
    /// As [`Run::commit_hash`].
    pub commit_hash: &'a str,
}

impl<'a> RunRef<'a> {
    /// Decodes a stored `Run` value (the registry's encoding) without
    /// copying its text. Errors as postcard does on bytes that are not a
    /// `Run`.
    ///
    /// Cost: one UTF-8 check over the run's text where it can (the text
    /// fields lie back to back, separated by their one-byte lengths), not
    /// one per field; anything else (a long field, bytes that do not
    /// decode) goes through postcard, which also words the error.
    pub fn decode(bytes: &'a [u8]) -> Result<RunRef<'a>, postcard::Error> {
        match run_ref_fast::decode(bytes) {
            Some(run) => Ok(run),
            None => postcard::from_bytes(bytes),
        }
    }

    /// The owned [`Run`].
    pub fn to_run(&self) -> Run {
        Run {
            run_id: self.run_id.to_string(),
            experiment_name: self.experiment_name.to_string(),
            vm_name: self.vm_name.to_string(),
            status: self.status.to_string(),
            harness: self.harness.to_string(),
            repo_url: self.repo_url.to_string(),
            branch: self.branch.to_string(),
            task: self.task.to_string(),
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            agent_name: self.agent_name.to_string(),
            workspace_path: self.workspace_path.to_string(),
            commit_hash: self.commit_hash.to_string(),
        }
    }
}

/// [`RunRef::decode`]'s fast path: postcard's encoding of a `Run` read by
/// hand, `None` on anything it does not decode as postcard would (then
/// postcard decides, and words the error).
mod run_ref_fast {
    use super::RunRef;
    use std::ops::Range;

    /// Reads a postcard varint at `*at` (as postcard's
    /// `try_take_varint_u64`: at most 10 bytes, the tenth at most 1).
    /// Inlined for the one-byte case (every length below 128), which is
    /// most of a run's varints.
    #[inline(always)]
    fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let b = *bytes.get(*at)?;
        if b < 0x80 {
            *at += 1;
            return Some(u64::from(b));
        }
        varint_long(bytes, at)
    }

    /// [`varint`] of two bytes or more.
    fn varint_long(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut out = 0u64;
        for i in 0..10 {
            let b = *bytes.get(*at)?;
            *at += 1;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i < 9 || b <= 1).then_some(out);
            }
        }
        None
    }

    /// The byte range of the string at `*at` (its length, then its bytes).
    #[inline(always)]
    fn text(bytes: &[u8], at: &mut usize) -> Option<Range<usize>> {
        let len = usize::try_from(varint(bytes, at)?).ok()?;
        let start = *at;
        let end = start.checked_add(len).filter(|e| *e <= bytes.len())?;
        *at = end;
        Some(start..end)
    }

    fn int(bytes: &[u8], at: &mut usize) -> Option<i64> {
        let n = varint(bytes, at)?;
        Some(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    /// The text of `fields` (ranges of `bytes` in order) checked as UTF-8
    /// in one pass over the bytes from the first to the last: the bytes
    /// between them are their lengths, one byte (ASCII) each, so each
    /// field starts and ends on a character boundary of the whole. Where
    /// it does not, each field is checked on its own.
    #[inline(always)]
    fn texts<'a, const N: usize>(
        bytes: &'a [u8],
        fields: &[Range<usize>; N],
    ) -> Option<[&'a str; N]> {
        let (first, last) = (fields.first()?.start, fields.last()?.end);
        let mut out = [""; N];
        if let Ok(whole) = std::str::from_utf8(bytes.get(first..last)?) {
            let mut all = true;
            for (slot, r) in out.iter_mut().zip(fields) {
                match whole.get(r.start - first..r.end - first) {
                    Some(s) => *slot = s,
                    None => all = false,
                }
            }
            if all {
                return Some(out);
            }
        }
        for (slot, r) in out.iter_mut().zip(fields) {
            *slot = std::str::from_utf8(bytes.get(r.clone())?).ok()?;
        }
        Some(out)
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<RunRef<'_>> {
        let mut at = 0;
        let mut head: [Range<usize>; 8] = Default::default();
        for r in &mut head {
            *r = text(bytes, &mut at)?;
        }
        let started_at_ms = int(bytes, &mut at)?;
        let finished_at_ms = int(bytes, &mut at)?;
        let mut tail: [Range<usize>; 3] = Default::default();
        for r in &mut tail {
            *r = text(bytes, &mut at)?;
        }
        let [
            run_id,
            experiment_name,
            vm_name,
            status,
            harness,
            repo_url,
            branch,
            task,
        ] = texts(bytes, &head)?;
        let [agent_name, workspace_path, commit_hash] = texts(bytes, &tail)?;
        Some(RunRef {
            run_id,
            experiment_name,
            vm_name,
            status,
            harness,
            repo_url,
            branch,
            task,
            started_at_ms,
            finished_at_ms,
            agent_name,
            workspace_path,
            commit_hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_run_ref_decodes_exactly_what_a_run_encodes() {
        let mut run = Run::new("r-1", "exp");
        run.task = "tune the schedule \u{e9}".into();
        run.started_at_ms = -5;
        run.finished_at_ms = 1_700_000_000_000;
        run.commit_hash = "ab".repeat(20);
        let bytes = postcard::to_stdvec(&run).unwrap();
        let view = RunRef::decode(&bytes).unwrap();
        assert_eq!(view.to_run(), run);
        assert_eq!(postcard::to_stdvec(&view).unwrap(), bytes);
        assert!(RunRef::decode(&bytes[..bytes.len() / 2]).is_err());
    }

    fn run_strategy() -> impl Strategy<Value = Run> {
        // Text of every kind: empty, ASCII, multi-byte, longer than 127
        // bytes (a two-byte length).
        let text = prop_oneof![
            Just(String::new()),
            "[a-z0-9-]{1,40}",
            "\\PC{0,12}",
            "[a-f0-9]{120,200}",
        ];
        (
            proptest::collection::vec(text, 11),
            any::<i64>(),
            any::<i64>(),
        )
            .prop_map(|(t, started_at_ms, finished_at_ms)| Run {
                run_id: t[0].clone(),
                experiment_name: t[1].clone(),
                vm_name: t[2].clone(),
                status: t[3].clone(),
                harness: t[4].clone(),
                repo_url: t[5].clone(),
                branch: t[6].clone(),
                task: t[7].clone(),
                started_at_ms,
                finished_at_ms,
                agent_name: t[8].clone(),
                workspace_path: t[9].clone(),
                commit_hash: t[10].clone(),
            })
    }

    proptest! {
        /// The hand-read fast path answers exactly as postcard does: the
        /// same run for every encoded run, and for damaged bytes either
        /// postcard's answer or none (postcard then decides).
        #[test]
        fn the_fast_path_agrees_with_postcard(
            run in run_strategy(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
            trailing in proptest::collection::vec(any::<u8>(), 0..3),
        ) {
            let mut bytes = postcard::to_stdvec(&run).unwrap();
            prop_assert_eq!(run_ref_fast::decode(&bytes).map(|r| r.to_run()), Some(run.clone()));
            bytes.extend(&trailing);
            prop_assert_eq!(RunRef::decode(&bytes).unwrap().to_run(), run);
            for (i, b) in flips {
                let i = i.index(bytes.len());
                bytes[i] ^= b;
            }
            let slow = postcard::from_bytes::<RunRef>(&bytes);
            if let Some(fast) = run_ref_fast::decode(&bytes) {
                prop_assert_eq!(Ok(fast), slow.clone());
            }
            prop_assert_eq!(RunRef::decode(&bytes), slow);
            let cut = &bytes[..cut.index(bytes.len() + 1)];
            prop_assert_eq!(RunRef::decode(cut), postcard::from_bytes::<RunRef>(cut));
        }
    }
}
