//! The byte encodings of the chart series: the head entry (version, then
//! postcard of [`Meta`]), the blocks of points and the crashed flags. A
//! value of another version, or one that does not parse, decodes to
//! `None`.

use autoresearch_core::series::OutcomeKind;
use serde::{Deserialize, Serialize};

/// The version tag of a `series_head` value, of a block and of a crashed
/// bitmap. Another version is not read (the chart materializes) and a
/// writer stops keeping the world's series. Version 3: the head holds no
/// tick (the series is at the tick the world's current state is at, as
/// both are kept in one transaction), a point's crashed flag is in
/// `series_crashed`, a point's task is not repeated when it is the
/// previous point's (series of versions 1 and 2 were written by
/// development builds only).
pub(crate) const VERSION: u8 = 3;

/// What a world's series knows beside its points.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Meta {
    /// Indexed by experiment id (the `experiment` of a points key).
    pub(super) experiments: Vec<ExperimentMeta>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct ExperimentMeta {
    pub(super) name: String,
    /// Metric names, indexed by metric id (never shrinks).
    pub(super) metrics: Vec<String>,
    /// How many Results of the experiment's runs have each metric.
    pub(super) counts: Vec<u64>,
    /// The newest (highest entity) attempt with a non-empty comparator.
    pub(super) spec: Option<(u64, String)>,
    /// How many runs it has.
    pub(super) attempts: u64,
}

impl ExperimentMeta {
    /// The id of metric `name`, added when new; `None` past 65,535
    /// metrics (a block stores ids and their count as `u16`).
    pub(super) fn metric_id(&mut self, name: &str) -> Option<u16> {
        match self.metrics.iter().position(|m| m == name) {
            Some(i) => u16::try_from(i).ok(),
            None => {
                let id = u16::try_from(self.metrics.len())
                    .ok()
                    .filter(|i| *i < u16::MAX)?;
                self.metrics.push(name.to_string());
                self.counts.push(0);
                Some(id)
            }
        }
    }
}

/// One attempt as a block stores it (its crashed flag is in a bitmap
/// apart: a Run's status changes far more often than the rest).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StoredPoint {
    /// The entity's low 8 bits.
    pub(super) low: u8,
    pub(super) outcome: Option<OutcomeKind>,
    pub(super) task: u64,
    pub(super) means: Vec<(u16, f64)>,
}

fn outcome_code(o: Option<OutcomeKind>) -> u8 {
    match o {
        None => 0,
        Some(OutcomeKind::Keep) => 1,
        Some(OutcomeKind::Discard) => 2,
        Some(OutcomeKind::Crash) => 3,
        Some(OutcomeKind::Pending) => 4,
        Some(OutcomeKind::Baseline) => 5,
        Some(OutcomeKind::Other) => 6,
    }
}

fn outcome_of(code: u8) -> Option<Option<OutcomeKind>> {
    Some(match code {
        0 => None,
        1 => Some(OutcomeKind::Keep),
        2 => Some(OutcomeKind::Discard),
        3 => Some(OutcomeKind::Crash),
        4 => Some(OutcomeKind::Pending),
        5 => Some(OutcomeKind::Baseline),
        6 => Some(OutcomeKind::Other),
        _ => return None,
    })
}

/// A point's flags byte: the outcome code in the low 3 bits, then these.
const HAS_MEANS: u8 = 1 << 3;
const SAME_TASK: u8 = 1 << 4;
const KNOWN_FLAGS: u8 = 0x07 | HAS_MEANS | SAME_TASK;

/// A block: the version, then per point (in entity order) a flags byte
/// (the outcome code, [`HAS_MEANS`], [`SAME_TASK`]: the task is the
/// previous point's), the low byte, the task hash (`u64` LE) unless
/// [`SAME_TASK`], and with [`HAS_MEANS`] the number of means (`u16` LE)
/// and each as metric id (`u16` LE) and value (`f64` LE). A point of a
/// run without Results whose task differs from the previous point's
/// takes 10 bytes; one that shares it, 2.
pub(super) fn encode_block(points: &[StoredPoint]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + points.len() * 10);
    out.push(VERSION);
    let mut previous = None;
    for p in points {
        let n = p.means.len().min(u16::MAX as usize);
        let same = previous == Some(p.task);
        let flags = outcome_code(p.outcome)
            | if n > 0 { HAS_MEANS } else { 0 }
            | if same { SAME_TASK } else { 0 };
        out.push(flags);
        out.push(p.low);
        if !same {
            out.extend_from_slice(&p.task.to_le_bytes());
        }
        if n > 0 {
            out.extend_from_slice(&(n as u16).to_le_bytes());
            for (m, v) in &p.means[..n] {
                out.extend_from_slice(&m.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        previous = Some(p.task);
    }
    out
}

/// A little reader over a block's bytes.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Reads a block, calling `point` for each (without its means) and
/// `mean` for each of its means; `None` when the bytes are not a block
/// of this version.
pub(super) fn scan_block(
    bytes: &[u8],
    mut point: impl FnMut(u8, Option<OutcomeKind>, u64),
    mut mean: impl FnMut(u16, f64),
) -> Option<()> {
    let mut b = Bytes(bytes);
    if b.u8()? != VERSION {
        return None;
    }
    let mut previous = None;
    while !b.0.is_empty() {
        let flags = b.u8()?;
        if flags & !KNOWN_FLAGS != 0 {
            return None;
        }
        let outcome = outcome_of(flags & 0x07)?;
        let low = b.u8()?;
        let task = if flags & SAME_TASK != 0 {
            previous?
        } else {
            b.u64()?
        };
        previous = Some(task);
        point(low, outcome, task);
        if flags & HAS_MEANS != 0 {
            for _ in 0..b.u16()? {
                let m = b.u16()?;
                let v = f64::from_bits(b.u64()?);
                mean(m, v);
            }
        }
    }
    Some(())
}

pub(super) fn decode_block(bytes: &[u8]) -> Option<Vec<StoredPoint>> {
    let mut points: Vec<StoredPoint> = Vec::new();
    let cell = std::cell::RefCell::new(&mut points);
    scan_block(
        bytes,
        |low, outcome, task| {
            cell.borrow_mut().push(StoredPoint {
                low,
                outcome,
                task,
                means: Vec::new(),
            })
        },
        |m, v| {
            if let Some(p) = cell.borrow_mut().last_mut() {
                p.means.push((m, v));
            }
        },
    )?;
    Some(points)
}

/// The crashed flags of a block's points: bit `low` of the 256.
pub(super) type Crashed = [u8; 32];

/// A bitmap: the version, then its bytes up to the last non-zero one
/// (an all-clear bitmap is not stored).
pub(super) fn encode_crashed(bits: &Crashed) -> Vec<u8> {
    let len = bits.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(1 + len);
    out.push(VERSION);
    out.extend_from_slice(&bits[..len]);
    out
}

pub(super) fn decode_crashed(bytes: &[u8]) -> Option<Crashed> {
    let (&VERSION, rest) = bytes.split_first()? else {
        return None;
    };
    let mut bits = [0u8; 32];
    bits.get_mut(..rest.len())?.copy_from_slice(rest);
    Some(bits)
}

/// Whether bit `low` of `bits` is set.
pub(super) fn is_crashed(bits: &Crashed, low: u8) -> bool {
    bits[usize::from(low / 8)] & (1 << (low % 8)) != 0
}

/// Sets bit `low` of `bits` to `crashed`; whether it changed.
pub(super) fn set_crashed(bits: &mut Crashed, low: u8, crashed: bool) -> bool {
    let (byte, bit) = (usize::from(low / 8), 1u8 << (low % 8));
    let was = bits[byte] & bit != 0;
    if crashed {
        bits[byte] |= bit;
    } else {
        bits[byte] &= !bit;
    }
    was != crashed
}

pub(super) fn encode_head(meta: &Meta) -> Option<Vec<u8>> {
    postcard::to_extend(meta, vec![VERSION]).ok()
}

pub(super) fn decode_head(bytes: &[u8]) -> Option<Meta> {
    let (&VERSION, body) = bytes.split_first()? else {
        return None;
    };
    postcard::from_bytes(body).ok()
}
