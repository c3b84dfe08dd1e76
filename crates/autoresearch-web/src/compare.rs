//! The replay view's data: two worlds' attempts matched by run id (a world
//! and a fork of it share their runs' ids, and a replay carries every later
//! run into its fork with a decision re-made), the decisions that differ,
//! and each world's kept step line on one x axis.
//!
//! The rows are world A's attempts in recording order, then the attempts
//! only world B has (a fork continued by a loop). A row is *changed* when
//! both worlds decided it and not alike (keep and baseline count as one):
//! the same test as `autoresearch replay`'s `*` marks.

use crate::chart::{self, Chart, StepSeries};
use crate::index::{RowClass, RunRow, WorldIndex};
use crate::view::fmt_metric;
use serde::Serialize;
use std::collections::HashSet;

/// One attempt as both worlds hold it: positions in A's and B's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    /// Its position in world A's runs.
    pub a: Option<u32>,
    /// Its position in world B's runs.
    pub b: Option<u32>,
}

/// Two worlds' attempts matched (see the module docs). Cost to build:
/// O(runs of A + runs of B) hash look-ups; the caller caches it per pair of
/// ticks.
#[derive(Debug)]
pub struct Comparison {
    /// Every attempt of either world, A's order first.
    pub pairs: Vec<Pair>,
    /// Indexes into `pairs` of the changed ones, ascending.
    pub changed: Vec<u32>,
    /// Attempts both worlds hold.
    pub shared: usize,
    /// World A's kept step line over the rows (1-based row number, metric).
    pub steps_a: Vec<(usize, f64)>,
    /// World B's.
    pub steps_b: Vec<(usize, f64)>,
}

/// Whether a decision made the candidate head.
fn made_head(c: RowClass) -> bool {
    matches!(c, RowClass::Keep | RowClass::Baseline)
}

/// A row's decision as the replay view compares it: keep and baseline
/// both make the candidate head, so they count as one; `None` for a row
/// with no decision (running, or stopped without one).
fn decision(c: RowClass) -> Option<RowClass> {
    match c {
        RowClass::Keep | RowClass::Baseline => Some(RowClass::Keep),
        RowClass::Discard | RowClass::Crash | RowClass::Pending => Some(c),
        RowClass::Running | RowClass::Other => None,
    }
}

/// Whether A and B decided the same attempt differently (both decided,
/// and not alike: the test `autoresearch replay` marks with `*`).
pub fn differs(a: &RunRow, b: &RunRow) -> bool {
    match (decision(a.class()), decision(b.class())) {
        (Some(x), Some(y)) => x != y,
        _ => false,
    }
}

impl Comparison {
    /// Matches `a`'s and `b`'s attempts, charting `metric`.
    pub fn of(a: &WorldIndex, b: &WorldIndex, metric: Option<&str>) -> Comparison {
        let mut pairs = Vec::with_capacity(a.runs.len());
        let mut in_b_seen = HashSet::new();
        for (pa, row) in a.runs.iter().enumerate() {
            let pb = b.run(&row.run.run_id).map(|(p, _)| p as u32);
            if let Some(p) = pb {
                in_b_seen.insert(p);
            }
            pairs.push(Pair {
                a: Some(pa as u32),
                b: pb,
            });
        }
        let shared = in_b_seen.len();
        for pb in 0..b.runs.len() as u32 {
            if !in_b_seen.contains(&pb) {
                pairs.push(Pair {
                    a: None,
                    b: Some(pb),
                });
            }
        }
        let mut changed = Vec::new();
        let (mut steps_a, mut steps_b) = (Vec::new(), Vec::new());
        for (i, p) in pairs.iter().enumerate() {
            let ra = p.a.map(|x| &a.runs[x as usize]);
            let rb = p.b.map(|x| &b.runs[x as usize]);
            if let (Some(x), Some(y)) = (ra, rb)
                && differs(x, y)
            {
                changed.push(i as u32);
            }
            for (row, steps) in [(ra, &mut steps_a), (rb, &mut steps_b)] {
                if let Some(r) = row
                    && made_head(r.class())
                    && let Some(v) = metric.and_then(|m| r.metric(m)).filter(|v| v.is_finite())
                {
                    steps.push((i + 1, v));
                }
            }
        }
        Comparison {
            pairs,
            changed,
            shared,
            steps_a,
            steps_b,
        }
    }

    /// The chart of both step lines over the rows, changed rows marked.
    pub fn chart(&self, metric: Option<&str>, names: (&str, &str)) -> Chart {
        let marks: Vec<usize> = self.changed.iter().map(|&i| i as usize + 1).collect();
        chart::steps_chart(
            self.pairs.len(),
            metric,
            &[
                StepSeries {
                    name: names.0,
                    class: "steps",
                    steps: &self.steps_a,
                },
                StepSeries {
                    name: names.1,
                    class: "steps-b",
                    steps: &self.steps_b,
                },
            ],
            &marks,
        )
    }
}

/// One side of a compared row.
#[derive(Clone, Debug, Serialize)]
pub struct SideCell {
    /// What the world decided.
    pub class: RowClass,
    /// The decision's reason.
    pub reason: String,
    /// The run's page in that world.
    pub url: String,
}

/// One row of the replay view's table.
#[derive(Clone, Debug, Serialize)]
pub struct CompareRow {
    /// The row's number (1-based, A's order then B's extra runs).
    pub n: usize,
    /// The run.
    pub run_id: String,
    /// Its candidate commit.
    pub commit: String,
    /// Its metric (the same Results in both worlds).
    pub metric: Option<f64>,
    /// `metric` as printed.
    pub metric_text: String,
    /// What was tried.
    pub idea: String,
    /// World A's decision, if A has the run.
    pub a: Option<SideCell>,
    /// World B's decision, if B has the run.
    pub b: Option<SideCell>,
    /// Whether the two decided it differently.
    pub changed: bool,
}

fn side(world: &str, row: &RunRow) -> SideCell {
    SideCell {
        class: row.class(),
        reason: row
            .outcome
            .as_ref()
            .map(|o| o.reason.clone())
            .unwrap_or_default(),
        url: crate::view::run_url(world, &row.run.run_id),
    }
}

/// The row `pair` (number `n`, 1-based); `None` for a pair of no run.
pub fn row(
    a: &WorldIndex,
    b: &WorldIndex,
    pair: Pair,
    n: usize,
    metric: Option<&str>,
) -> Option<CompareRow> {
    let ra = pair.a.and_then(|x| a.runs.get(x as usize));
    let rb = pair.b.and_then(|x| b.runs.get(x as usize));
    let any = ra.or(rb)?;
    let value = metric.and_then(|m| {
        ra.and_then(|r| r.metric(m))
            .or(rb.and_then(|r| r.metric(m)))
    });
    Some(CompareRow {
        n,
        run_id: any.run.run_id.clone(),
        commit: any.run.commit_hash.clone(),
        metric: value,
        metric_text: fmt_metric(value),
        idea: any.idea().to_string(),
        a: ra.map(|r| side(&a.info.name, r)),
        b: rb.map(|r| side(&b.info.name, r)),
        changed: matches!((ra, rb), (Some(x), Some(y)) if differs(x, y)),
    })
}
