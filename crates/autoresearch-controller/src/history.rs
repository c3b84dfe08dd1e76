//! The history file the proposer reads: every past attempt of the
//! experiment in karpathy's results.tsv shape (`commit`, one column per
//! metric, `status`, `description`).

use autoresearch_core::lifecycle::{Attempt, Outcome};
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
    /// The results.tsv status word (`keep`, `discard`, `crash`, `pending`, `running`).
    pub status: String,
    /// The decision's reason, on one line.
    pub description: String,
}

impl Row {
    /// The history line of attempt `a`.
    pub fn of(a: &Attempt) -> Row {
        let commit = short_commit(&a.run.commit_hash).to_string();
        let reason = a.outcome.as_ref().map_or("", |o| o.reason.as_str());
        Row {
            commit: if commit.is_empty() {
                "-------".into()
            } else {
                commit
            },
            metrics: final_metrics(a),
            status: status_word(&a.run, a.outcome.as_ref()).to_string(),
            description: reason
                .chars()
                .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
                .collect(),
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

/// Renders the attempts as results.tsv text.
pub fn render(attempts: &[Attempt]) -> String {
    let rows: Vec<Row> = attempts.iter().map(Row::of).collect();
    render_rows(rows.iter())
}

/// Renders rows as results.tsv text: one metric column for every metric
/// name, in the order the names first appear (0 where a row has none).
pub fn render_rows<'a>(rows: impl Iterator<Item = &'a Row> + Clone) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in rows.clone() {
        for (n, _) in &r.metrics {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let mut out = String::from("commit");
    for n in &names {
        out.push('\t');
        out.push_str(n);
    }
    out.push_str("\tstatus\tdescription\n");
    for r in rows {
        out.push_str(&r.commit);
        for n in &names {
            let v = r
                .metrics
                .iter()
                .find(|(k, _)| k == n)
                .map_or(0.0, |(_, v)| *v);
            out.push_str(&format!("\t{v:.6}"));
        }
        out.push_str(&format!("\t{}\t{}\n", r.status, r.description));
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
