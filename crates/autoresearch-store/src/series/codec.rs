//! The byte encodings of the chart series: the head entry (version,
//! tick, postcard of [`Meta`]) and the blocks of points. A value of
//! another version, or one that does not parse, decodes to `None`.

use autoresearch_core::Tick;
use autoresearch_core::series::OutcomeKind;
use serde::{Deserialize, Serialize};

/// The version tag of a `series_head` value and of a block. Another
/// version is not read (the chart materializes) and a writer stops
/// keeping the world's series. Version 2: the crashed flag in the
/// outcome byte, metric ids as u16 and commits as 128-bit hashes (series
/// of version 1 were written by a development build only).
pub(crate) const VERSION: u8 = 2;

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

/// One attempt as a block stores it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StoredPoint {
    /// The entity's low 8 bits.
    pub(super) low: u8,
    pub(super) outcome: Option<OutcomeKind>,
    pub(super) crashed: bool,
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

/// A block: the version, then per point (in entity order) the low byte,
/// the outcome code (bit 7 set when the run crashed), the task hash
/// (`u64` LE), the number of means (`u16` LE) and each as metric id (`u16`
/// LE) and value
/// (`f64` LE). Fixed widths, so a reader skips what it does not need.
pub(super) fn encode_block(points: &[StoredPoint]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + points.len() * 24);
    out.push(VERSION);
    for p in points {
        out.push(p.low);
        out.push(outcome_code(p.outcome) | (u8::from(p.crashed) << 7));
        out.extend_from_slice(&p.task.to_le_bytes());
        let n = p.means.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        for (m, v) in &p.means[..n] {
            out.extend_from_slice(&m.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
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
    mut point: impl FnMut(u8, Option<OutcomeKind>, bool, u64),
    mut mean: impl FnMut(u16, f64),
) -> Option<()> {
    let mut b = Bytes(bytes);
    if b.u8()? != VERSION {
        return None;
    }
    while !b.0.is_empty() {
        let low = b.u8()?;
        let code = b.u8()?;
        let outcome = outcome_of(code & 0x7f)?;
        let crashed = code & 0x80 != 0;
        let task = b.u64()?;
        point(low, outcome, crashed, task);
        for _ in 0..b.u16()? {
            let m = b.u16()?;
            let v = f64::from_bits(b.u64()?);
            mean(m, v);
        }
    }
    Some(())
}

pub(super) fn decode_block(bytes: &[u8]) -> Option<Vec<StoredPoint>> {
    let mut points: Vec<StoredPoint> = Vec::new();
    let cell = std::cell::RefCell::new(&mut points);
    scan_block(
        bytes,
        |low, outcome, crashed, task| {
            cell.borrow_mut().push(StoredPoint {
                low,
                outcome,
                crashed,
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

pub(super) fn encode_head(tick: Tick, meta: &Meta) -> Option<Vec<u8>> {
    let mut out = vec![VERSION];
    out.extend_from_slice(&tick.0.to_le_bytes());
    postcard::to_extend(meta, out).ok()
}

pub(super) fn decode_head(bytes: &[u8]) -> Option<(Tick, Meta)> {
    let (&VERSION, rest) = bytes.split_first()? else {
        return None;
    };
    if rest.len() < 8 {
        return None;
    }
    let (tick, body) = rest.split_at(8);
    let tick = Tick(u64::from_le_bytes(tick.try_into().ok()?));
    Some((tick, postcard::from_bytes(body).ok()?))
}
