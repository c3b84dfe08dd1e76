//! What the pages show, as serializable values: the JSON routes return them
//! as they are and the templates render them, so both always agree.

use crate::error::WebError;
use crate::index::{Counts, RowClass, RunRow, WorldIndex};
use autoresearch_core::{
    Confirmation, ExecutorJob, JobUsage, MetricNoise, NoiseModel, RunCost, WorldInfo, now_ms,
    num::fmt_f64,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Percent-encodes `s` for one URL path segment or query value (every byte
/// but RFC 3986's unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The path of world `name`'s page.
pub fn world_url(name: &str) -> String {
    format!("/worlds/{}", enc(name))
}

/// The path of a run's page.
pub fn run_url(world: &str, run_id: &str) -> String {
    format!("/worlds/{}/runs/{}", enc(world), enc(run_id))
}

/// A metric value as the dashboard prints it (six significant digits;
/// the JSON carries the exact number).
pub fn fmt_metric(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() && x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-4) => {
            format!("{x:.4e}")
        }
        Some(x) if x.is_finite() => {
            let digits = 6 - (x.abs().log10().floor() as i32 + 1).clamp(0, 6);
            let s = format!("{x:.*}", digits.max(0) as usize);
            if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            }
        }
        Some(x) => fmt_f64(x),
        None => String::new(),
    }
}

/// How long ago `ms` was, in words ("12s", "3m", "5h", "2d"); empty for 0.
pub fn fmt_age(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    fmt_duration(now_ms().saturating_sub(ms))
}

/// A duration in milliseconds in words.
pub fn fmt_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A Unix-ms time as `YYYY-MM-DD HH:MM:SSZ` (UTC); empty for 0.
pub fn fmt_time(ms: i64) -> String {
    if ms <= 0 {
        return String::new();
    }
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// One row of the attempts table (and of the pending and in-flight lists).
#[derive(Clone, Debug, Serialize)]
pub struct RowView {
    /// The attempt's number in the world (1-based, in recording order).
    pub n: usize,
    /// The run's id.
    pub run_id: String,
    /// The run page's path.
    pub url: String,
    /// What the row counts as (keep, discard, crash, pending, ...).
    pub class: RowClass,
    /// The Run's status word.
    pub run_status: String,
    /// The attempt's phase (booting, proposing, evaluating, promoting, finished).
    pub phase: &'static str,
    /// The candidate commit (full hash; empty before one is made).
    pub commit: String,
    /// The shown metric's mean over the final samples.
    pub metric: Option<f64>,
    /// `metric` as printed.
    pub metric_text: String,
    /// Samples recorded.
    pub samples: usize,
    /// Votes cast.
    pub votes: usize,
    /// What was tried: its Description's subject, else the run's task.
    pub idea: String,
    /// Its held-out confirmation in a few words (`ok 0.91`, `rejected 0.97
    /// vs 0.93`, `running`); empty without one.
    pub confirm: String,
    /// Its scheduler jobs (Slurm ids and states); filled for runs in flight.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<ExecutorJob>,
    /// The decision's reason in words.
    pub reason: String,
    /// When the run started (Unix ms; 0 unknown).
    pub started_at_ms: i64,
    /// When it finished (Unix ms; 0 while running).
    pub finished_at_ms: i64,
    /// Time since it started, in words (in-flight runs).
    pub elapsed: String,
}

impl RowView {
    /// The row of `row`, at position `pos` of world `world`.
    pub fn of(world: &str, pos: usize, row: &RunRow, metric: Option<&str>) -> RowView {
        let value = metric.and_then(|m| row.metric(m));
        RowView {
            n: pos + 1,
            run_id: row.run.run_id.clone(),
            url: run_url(world, &row.run.run_id),
            class: row.class(),
            run_status: row.run.status.clone(),
            phase: row.phase().as_str(),
            commit: row.run.commit_hash.clone(),
            metric: value,
            metric_text: fmt_metric(value),
            samples: row.samples.len(),
            votes: row.votes,
            idea: row.idea().to_string(),
            confirm: row
                .confirmation()
                .map(Confirmation::cell)
                .unwrap_or_default(),
            jobs: Vec::new(),
            reason: row
                .outcome
                .as_ref()
                .map(|o| o.reason.clone())
                .unwrap_or_default(),
            started_at_ms: row.run.started_at_ms,
            finished_at_ms: row.run.finished_at_ms,
            elapsed: if row.run.started_at_ms > 0 {
                fmt_age(row.run.started_at_ms)
            } else {
                String::new()
            },
        }
    }
}

/// A world's line on the front page.
#[derive(Clone, Debug, Serialize)]
pub struct WorldSummary {
    /// The world's name.
    pub world: String,
    /// Its page.
    pub url: String,
    /// The experiment it holds.
    pub experiment: String,
    /// Its head tick.
    pub tick: u64,
    /// The world it was forked from, and where.
    pub parent: Option<ParentView>,
    /// The head commit (full hash).
    pub head_commit: String,
    /// The head's metric.
    pub head_metric: Option<f64>,
    /// `head_metric` as printed.
    pub head_metric_text: String,
    /// The metric shown.
    pub metric: Option<String>,
    /// Counts by class.
    pub counts: Counts,
    /// When the last tick was committed (Unix ms).
    pub last_activity_ms: i64,
    /// `last_activity_ms` as an age in words.
    pub last_activity: String,
}

/// Where a fork came from.
#[derive(Clone, Debug, Serialize)]
pub struct ParentView {
    /// The parent world's name (or its id when it is gone).
    pub world: String,
    /// Its page.
    pub url: String,
    /// The last tick the fork shares with it.
    pub tick: u64,
}

/// The head of an experiment.
#[derive(Clone, Debug, Serialize)]
pub struct HeadView {
    /// Its commit.
    pub commit: String,
    /// The run that made it head (empty for a baseline without a run).
    pub run_id: String,
    /// That run's page, when there is a run.
    pub url: String,
    /// The head's metric.
    pub metric: Option<f64>,
    /// `metric` as printed.
    pub metric_text: String,
}

/// The head of `idx`'s experiment, with its metric.
pub fn head_view(idx: &WorldIndex, metric: Option<&str>) -> Option<HeadView> {
    let head = idx.head()?;
    let value = idx
        .run(&head.run_id)
        .and_then(|(_, r)| metric.and_then(|m| r.metric(m)));
    Some(HeadView {
        commit: head.commit_hash.clone(),
        run_id: head.run_id.clone(),
        url: if head.run_id.is_empty() {
            String::new()
        } else {
            run_url(&idx.info.name, &head.run_id)
        },
        metric: value,
        metric_text: fmt_metric(value),
    })
}

/// The parent of `info`, named from `worlds`.
pub fn parent_view(info: &WorldInfo, worlds: &[WorldInfo]) -> Option<ParentView> {
    let p = info.parent?;
    let name = worlds
        .iter()
        .find(|w| w.id == p.parent)
        .map_or_else(|| p.parent.to_string(), |w| w.name.clone());
    Some(ParentView {
        url: world_url(&name),
        world: name,
        tick: p.tick.0,
    })
}

/// How the attempts table is asked for.
#[derive(Clone, Debug, Serialize)]
pub struct TableQuery {
    /// Only rows of this class.
    pub status: Option<RowClass>,
    /// Only rows whose id, idea, commit or reason contains this (any case).
    pub q: String,
    /// The order.
    pub sort: Sort,
    /// The 1-based page.
    pub page: usize,
    /// Rows per page.
    pub per: usize,
}

/// The attempts table's orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// Latest first (the default).
    New,
    /// Oldest first.
    Old,
    /// Best metric first (by the comparator's direction); rows without one last.
    Best,
}

impl Sort {
    /// The order named `word`.
    pub fn parse(word: &str) -> Option<Sort> {
        match word {
            "new" => Some(Sort::New),
            "old" => Some(Sort::Old),
            "best" => Some(Sort::Best),
            _ => None,
        }
    }
}

/// Rows per page unless asked otherwise, and the most a page may hold.
pub const PER_PAGE: usize = 50;
/// The largest `per` accepted.
pub const MAX_PER_PAGE: usize = 500;

impl TableQuery {
    /// Parses the table's query parameters; a clear `BadRequest` for a
    /// value that does not parse or is out of range.
    pub fn parse(
        status: Option<&str>,
        q: Option<&str>,
        sort: Option<&str>,
        page: Option<&str>,
        per: Option<&str>,
    ) -> Result<TableQuery, WebError> {
        let status = match status.filter(|s| !s.is_empty() && *s != "all") {
            None => None,
            Some(s) => Some(RowClass::parse(s).ok_or_else(|| {
                WebError::BadRequest(format!(
                    "status {s:?} is not one of all, {}",
                    RowClass::ALL.map(RowClass::as_str).join(", ")
                ))
            })?),
        };
        let sort = match sort.filter(|s| !s.is_empty()) {
            None => Sort::New,
            Some(s) => Sort::parse(s).ok_or_else(|| {
                WebError::BadRequest(format!("sort {s:?} is not one of new, old, best"))
            })?,
        };
        let number = |name: &str, v: Option<&str>, default: usize, max: usize| match v
            .filter(|s| !s.is_empty())
        {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(WebError::BadRequest(format!(
                    "{name} {s:?} is not a whole number from 1 to {max}"
                ))),
            },
        };
        let q = q.unwrap_or("").trim().to_string();
        if q.len() > 200 {
            return Err(WebError::BadRequest(
                "search text q is longer than 200 bytes".into(),
            ));
        }
        Ok(TableQuery {
            status,
            q,
            sort,
            page: number("page", page, 1, 1 << 40)?,
            per: number("per", per, PER_PAGE, MAX_PER_PAGE)?,
        })
    }

    /// Whether anything narrows the table (then finding a page scans every row).
    pub fn filters(&self) -> bool {
        self.status.is_some() || !self.q.is_empty()
    }

    /// Whether `row` passes the filters.
    pub fn matches(&self, row: &RunRow, q_lower: &str) -> bool {
        if self.status.is_some_and(|s| row.class() != s) {
            return false;
        }
        if q_lower.is_empty() {
            return true;
        }
        let has = |s: &str| contains_ignore_case(s, q_lower);
        has(&row.run.run_id)
            || has(&row.run.task)
            || row.description().is_some_and(|d| has(&d.text))
            || has(&row.run.commit_hash)
            || row.outcome.as_ref().is_some_and(|o| has(&o.reason))
    }

    /// The query string of this table with `page` (for links).
    pub fn href(&self, page: usize) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.status {
            parts.push(format!("status={}", s.as_str()));
        }
        if !self.q.is_empty() {
            parts.push(format!("q={}", enc(&self.q)));
        }
        if self.sort != Sort::New {
            parts.push(format!(
                "sort={}",
                serde_json::to_value(self.sort)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            ));
        }
        if self.per != PER_PAGE {
            parts.push(format!("per={}", self.per));
        }
        if page != 1 {
            parts.push(format!("page={page}"));
        }
        parts.join("&")
    }
}

/// Whether `hay` contains `needle_lower` (already lower case), ignoring ASCII case.
fn contains_ignore_case(hay: &str, needle_lower: &str) -> bool {
    let n = needle_lower.as_bytes();
    if n.is_empty() {
        return true;
    }
    if n.len() > hay.len() {
        return false;
    }
    hay.as_bytes()
        .windows(n.len())
        .any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

/// One page of the attempts table.
#[derive(Clone, Debug, Serialize)]
pub struct TableView {
    /// The rows of this page.
    pub rows: Vec<RowView>,
    /// The query that made it.
    pub query: TableQuery,
    /// Rows passing the filters.
    pub total: usize,
    /// Pages of `query.per` rows (at least 1).
    pub pages: usize,
    /// The previous page's query string, if any.
    pub prev: Option<String>,
    /// The next page's query string, if any.
    pub next: Option<String>,
}

/// The order in which `Sort::Best` lists rows (positions), computed once
/// per world, tick and metric.
pub type Order = Arc<Vec<u32>>;

/// The rows of `idx` in the order `sort` asks for, as positions; `best`
/// supplies the metric order when needed.
pub fn table(
    idx: &WorldIndex,
    query: TableQuery,
    metric: Option<(&str, bool)>,
    best: impl FnOnce() -> Order,
) -> Result<TableView, WebError> {
    let world = idx.info.name.as_str();
    let q_lower = query.q.to_ascii_lowercase();
    let offset = (query.page - 1).saturating_mul(query.per);
    let metric_name = metric.map(|(m, _)| m);
    let mut rows = Vec::with_capacity(query.per);
    let total;
    let mut take = |pos: usize, row: &RunRow| {
        if rows.len() < query.per {
            rows.push(RowView::of(world, pos, row, metric_name));
        }
    };
    match query.sort {
        Sort::New | Sort::Old if !query.filters() => {
            // No filter: the page is a slice of the recording order, O(page).
            total = idx.counts.attempts;
            let live: Box<dyn Iterator<Item = (usize, &RunRow)>> = if query.sort == Sort::New {
                Box::new(idx.runs.iter().enumerate().rev())
            } else {
                Box::new(idx.runs.iter().enumerate())
            };
            for (pos, row) in live.skip(offset).take(query.per) {
                take(pos, row);
            }
        }
        Sort::New | Sort::Old => {
            let live: Box<dyn Iterator<Item = (usize, &RunRow)>> = if query.sort == Sort::New {
                Box::new(idx.runs.iter().enumerate().rev())
            } else {
                Box::new(idx.runs.iter().enumerate())
            };
            let mut n = 0;
            for (pos, row) in live.filter(|(_, r)| query.matches(r, &q_lower)) {
                if n >= offset {
                    take(pos, row);
                }
                n += 1;
            }
            total = n;
        }
        Sort::Best => {
            let order = best();
            let mut n = 0;
            for pos in order.iter().map(|p| *p as usize) {
                let row = &idx.runs[pos];
                if query.matches(row, &q_lower) {
                    if n >= offset {
                        take(pos, row);
                    }
                    n += 1;
                }
            }
            total = n;
        }
    }
    let pages = total.div_ceil(query.per).max(1);
    if query.page > pages {
        return Err(WebError::BadRequest(format!(
            "page {} is past the last page of the attempts table (there are {pages} pages of {} rows)",
            query.page, query.per
        )));
    }
    Ok(TableView {
        prev: (query.page > 1).then(|| query.href(query.page - 1)),
        next: (query.page < pages).then(|| query.href(query.page + 1)),
        rows,
        total,
        pages,
        query,
    })
}

/// Every live row's position, best metric first (rows without the metric
/// last, in recording order). Cost: O(n log n); cached by the caller.
pub fn best_order(idx: &WorldIndex, metric: Option<(&str, bool)>) -> Order {
    let mut keyed: Vec<(Option<f64>, u32)> = idx
        .runs
        .iter()
        .enumerate()
        .map(|(pos, r)| (metric.and_then(|(m, _)| r.metric(m)), pos as u32))
        .collect();
    let minimize = metric.is_none_or(|(_, min)| min);
    keyed.sort_by(|(a, pa), (b, pb)| match (a, b) {
        (Some(x), Some(y)) => {
            let o = x.total_cmp(y);
            (if minimize { o } else { o.reverse() }).then(pa.cmp(pb))
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => pa.cmp(pb),
    });
    Arc::new(keyed.into_iter().map(|(_, p)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_times_and_names_print_as_the_pages_show_them() {
        let metric: &[(Option<f64>, &str)] = &[
            (None, ""),
            (Some(0.0), "0"),
            (Some(9.0), "9"),
            (Some(0.997_912_34), "0.997912"),
            (Some(123.456_789), "123.457"),
            (Some(-2.5), "-2.5"),
            (Some(1.5e-7), "1.5000e-7"),
            (Some(3.2e9), "3.2000e9"),
            (Some(f64::NAN), "nan"),
        ];
        for (v, want) in metric {
            assert_eq!(fmt_metric(*v), *want, "{v:?}");
        }
        let times: &[(i64, &str)] = &[
            (0, ""),
            (1_000, "1970-01-01 00:00:01Z"),
            (951_782_400_000, "2000-02-29 00:00:00Z"),
            (1_764_476_828_000, "2025-11-30 04:27:08Z"),
        ];
        for (ms, want) in times {
            assert_eq!(fmt_time(*ms), *want, "{ms}");
        }
        let durations: &[(i64, &str)] = &[
            (-5, "0s"),
            (59_999, "59s"),
            (65_000, "1m05s"),
            (3_600_000, "1h00m"),
            (90_000_000, "1d01h"),
        ];
        for (ms, want) in durations {
            assert_eq!(fmt_duration(*ms), *want, "{ms}");
        }
        assert_eq!(enc("autoresearch:a b/é"), "autoresearch%3Aa%20b%2F%C3%A9");
        assert_eq!(run_url("w", "r?1"), "/worlds/w/runs/r%3F1");
    }

    #[test]
    fn search_ignores_case_and_finds_nothing_in_shorter_text() {
        assert!(contains_ignore_case("Raise the LR", "the lr"));
        assert!(!contains_ignore_case("lr", "the lr"));
        assert!(contains_ignore_case("anything", ""));
    }
}

/// A cost as the pages show it: totals in milliseconds, by job kind, the
/// proposer's cost metrics, and one line for people.
#[derive(Clone, Debug, Serialize)]
pub struct CostView {
    /// CPU time of every job, in milliseconds (0 where not measured).
    pub cpu_ms: u64,
    /// Wall-clock time of every job, in milliseconds.
    pub wall_ms: u64,
    /// The proposers' jobs.
    pub propose: JobUsage,
    /// The evaluations.
    pub evaluate: JobUsage,
    /// The held-out confirmations.
    pub confirm: JobUsage,
    /// Jobs charged.
    pub jobs: u32,
    /// Cost metrics the proposers printed (`tokens`, `cost`, ...), summed.
    pub metrics: BTreeMap<String, f64>,
    /// `CPU 3.2s (propose 1s, evaluate 2.2s), wall 5s, 4 jobs; tokens 1200`.
    pub text: String,
}

impl CostView {
    /// The view of `c`.
    pub fn of(c: &RunCost) -> CostView {
        let total = c.total();
        let secs = |ms: u64| format!("{}s", fmt_f64(ms as f64 / 1000.0));
        let parts: Vec<String> = [
            ("propose", c.propose),
            ("evaluate", c.evaluate),
            ("confirm", c.confirm),
        ]
        .into_iter()
        .filter(|(_, u)| u.wall_ms > 0 || u.cpu_ms > 0)
        .map(|(name, u)| format!("{name} {}", secs(u.cpu_ms)))
        .collect();
        let mut text = format!(
            "CPU {} ({}), wall {}, {} jobs",
            secs(total.cpu_ms),
            parts.join(", "),
            secs(total.wall_ms),
            c.jobs
        );
        for (k, v) in &c.metrics {
            text.push_str(&format!("; {k} {}", fmt_f64(*v)));
        }
        CostView {
            cpu_ms: total.cpu_ms,
            wall_ms: total.wall_ms,
            propose: c.propose,
            evaluate: c.evaluate,
            confirm: c.confirm,
            jobs: c.jobs,
            metrics: c.metrics.clone(),
            text,
        }
    }
}

/// An experiment's noise model as the page shows it: the metrics that were
/// ever repeated.
#[derive(Clone, Debug, Serialize)]
pub struct NoiseView {
    /// The metrics with a known noise, sorted by name.
    pub metrics: Vec<MetricNoise>,
    /// One line each: `val σ 0.0031 (pooled-mad, df 12 from 5 commits)`.
    pub lines: Vec<String>,
    /// When the loop computed it.
    pub updated: String,
}

impl NoiseView {
    /// The view of `model`.
    pub fn of(model: &NoiseModel) -> NoiseView {
        let metrics: Vec<MetricNoise> = model
            .metrics
            .iter()
            .filter(|m| m.is_known())
            .cloned()
            .collect();
        let lines = metrics
            .iter()
            .map(|m| {
                let sigma = if m.sigma == 0.0 {
                    "0 (identical repeats)".to_string()
                } else {
                    fmt_f64(m.sigma)
                };
                format!(
                    "{} σ {sigma} ({}, df {} from {} commits)",
                    m.metric, m.method, m.df, m.groups
                )
            })
            .collect();
        NoiseView {
            metrics,
            lines,
            updated: fmt_time(model.updated_at_ms),
        }
    }
}
