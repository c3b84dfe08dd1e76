//! The history file the proposer reads: every decided attempt of the
//! experiment in karpathy's results.tsv shape (`commit`, one column per
//! metric, `status`, `description`: what the proposer tried), then
//! `reason` (why it was kept or not), in the column order and with the
//! number formatting of `log --format tsv`: the comparator's metric first
//! (six decimals where that loses nothing), the others in the order they
//! first appear (shortest exact form). Undecided attempts (running, waiting
//! for votes) are left out, and a crash row's metrics are empty: a crash
//! has no score (a placeholder `0` would read as the best one).

use autoresearch_core::lifecycle::{Attempt, Outcome};
use autoresearch_core::num::{fmt_f64, fmt_f64_places};
use autoresearch_core::{OutcomeStatus, Run, TsvStatus, short_commit};
use serde_json::Value;
use std::path::Path;

/// Metric values of `attempt`'s final commit, averaged over its samples, in
/// the order the metric names first appear.
pub fn final_metrics(attempt: &Attempt) -> Vec<(String, f64)> {
    let mut sums: Vec<(String, f64, u32)> = Vec::new();
    for r in attempt.final_results() {
        let Ok(Value::Object(o)) = r.outputs() else {
            continue;
        };
        for (k, v) in &o {
            let Some(v) = v.as_f64().filter(|v| v.is_finite()) else {
                continue;
            };
            match sums.iter_mut().find(|(n, _, _)| n == k) {
                Some(e) => {
                    e.1 += v;
                    e.2 += 1;
                }
                None => sums.push((k.clone(), v, 1)),
            }
        }
    }
    sums.into_iter()
        .map(|(n, s, c)| (n, s / f64::from(c)))
        .collect()
}

/// The status column ([`TsvStatus`], the mapping `log --format tsv` uses
/// too): karpathy's keep/discard/crash, a baseline counting as keep (it was
/// the head), `pending` for a decision waiting on votes, and `running` for
/// an attempt not decided yet.
pub fn status_word(run: &Run, outcome: Option<&Outcome>) -> &'static str {
    TsvStatus::of(run, outcome).as_str()
}

/// One attempt as a line of the history file.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The short commit, `-------` when there is none.
    pub commit: String,
    /// The final commit's metrics, averaged over its samples, in the order they first appear.
    pub metrics: Vec<(String, f64)>,
    /// The results.tsv status (`keep`, `discard`, `crash`, `pending`, `running`).
    pub status: TsvStatus,
    /// What the proposer tried (its description's subject), on one line;
    /// `baseline` for a baseline.
    pub description: String,
    /// The decision's reason, on one line.
    pub reason: String,
}

/// `text` on one line of a TSV file.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '\t' || c == '\n' || c == '\r' {
                ' '
            } else {
                c
            }
        })
        .collect()
}

impl Row {
    /// The history line of attempt `a`.
    pub fn of(a: &Attempt) -> Row {
        let commit = short_commit(&a.run.commit_hash).to_string();
        let reason = a.outcome.as_ref().map_or("", |o| o.reason.as_str());
        let status = TsvStatus::of(&a.run, a.outcome.as_ref());
        let baseline = a
            .outcome
            .as_ref()
            .is_some_and(|o| o.status == OutcomeStatus::Baseline);
        let idea = match a.idea() {
            Some(idea) => idea,
            None if baseline => OutcomeStatus::Baseline.as_str(),
            None => "",
        };
        Row {
            commit: if commit.is_empty() {
                "-------".into()
            } else {
                commit
            },
            metrics: if status == TsvStatus::Crash {
                Vec::new()
            } else {
                final_metrics(a)
            },
            status,
            description: one_line(idea),
            reason: one_line(reason),
        }
    }

    /// Whether the line can no longer change: the run is over and its
    /// decision is not waiting for votes.
    pub fn is_final(a: &Attempt) -> bool {
        let over = a.run.status().is_ok_and(|s| s.is_terminal());
        over && a
            .outcome
            .as_ref()
            .is_some_and(|o| o.status != OutcomeStatus::Pending)
    }
}

/// Renders the attempts as results.tsv text, `metric` first.
pub fn render(attempts: &[Attempt], metric: Option<&str>) -> String {
    let rows: Vec<Row> = attempts.iter().map(Row::of).collect();
    render_rows(rows.iter(), metric)
}

/// Renders the decided rows as results.tsv text: one column for every
/// metric name, `metric` first, then in the order the names first appear
/// (empty where a row has none).
pub fn render_rows<'a>(
    rows: impl Iterator<Item = &'a Row> + Clone,
    metric: Option<&str>,
) -> String {
    let rows = rows.filter(|r| r.status.is_decided());
    // Names in first-seen order, found through a set: an evaluator may
    // print tens of thousands of metrics.
    let mut names: Vec<&str> = Vec::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for r in rows.clone() {
        for (n, _) in &r.metrics {
            if seen.insert(n.as_str()) {
                names.push(n);
            }
        }
    }
    if let Some(i) = metric.and_then(|m| names.iter().position(|n| *n == m)) {
        let m = names.remove(i);
        names.insert(0, m);
    }
    // Without a comparator's metric, the first column is the metric, as
    // `log --format tsv` guesses it.
    let metric = metric.or(names.first().copied());
    let mut out = String::from("commit");
    for n in &names {
        out.push('\t');
        out.push_str(n);
    }
    out.push_str("\tstatus\tdescription\treason\n");
    for r in rows {
        out.push_str(&r.commit);
        let values: std::collections::HashMap<&str, f64> =
            r.metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        for n in &names {
            out.push('\t');
            if let Some(v) = values.get(n) {
                out.push_str(&if Some(*n) == metric {
                    fmt_f64_places(*v, 6)
                } else {
                    fmt_f64(*v)
                });
            }
        }
        out.push_str(&format!(
            "\t{}\t{}\t{}\n",
            r.status.as_str(),
            r.description,
            r.reason
        ));
    }
    out
}

/// Writes the file atomically (temp file, then rename), so a proposer never
/// reads half of it.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // One temp file per writer: parallel runs write the history at once.
    let tmp = path.with_extension(format!("tsv.{:x}.tmp", rand::random::<u32>()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
