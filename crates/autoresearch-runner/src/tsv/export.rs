//! The export side of results.tsv: any experiment world (imported or
//! written by the loop) read back as attempts ([`attempt_log`]) and written
//! in the file's shape ([`AttemptLog::to_tsv`]), byte for byte for an
//! imported file.

use super::*;

/// One attempt as `log` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogRow {
    /// The run's id.
    #[serde(rename = "run__run_id")]
    pub run_id: String,
    /// The run's commit; empty when it made none.
    #[serde(rename = "run__commit_hash")]
    pub commit: String,
    /// The run's status word (`booting`, ..., `stopped`, `crashed`).
    #[serde(rename = "run__status")]
    pub run_status: String,
    /// The Outcome's status as stored (`keep`, `discard`, `crash`,
    /// `baseline`, `pending`), empty when undecided.
    #[serde(rename = "outcome__status")]
    pub outcome: String,
    /// The results.tsv status (`keep`, `discard`, `crash`), `None` while undecided.
    pub status: Option<String>,
    /// Metric and other columns from the run's Results (mean over several).
    pub values: BTreeMap<String, Value>,
    /// Values' text as an imported file printed them ([`TEXT`]).
    #[serde(skip)]
    pub texts: BTreeMap<String, String>,
    /// What was tried, on one line: the Results' `description` output (an
    /// imported file's column), else the subject of the run's
    /// [`Description`](autoresearch_core::Description) (the proposer's
    /// words), else `baseline` for a baseline, else the run's task for a
    /// run the loop never decided (an ingested one); empty otherwise.
    pub description: String,
    /// Why it was kept or not: the Outcome's reason (the comparator's, or
    /// the crash cause); empty when undecided.
    pub reason: String,
}

/// The column of the comparator's reason in a results.tsv the loop's
/// worlds export (after `description`).
pub const REASON: &str = "reason";

/// The attempts of one experiment in results.tsv terms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttemptLog {
    /// The experiment read.
    pub experiment: String,
    /// The metric column: the one recorded in the Experiment's metadata, else the first numeric
    /// output seen; `None` when there is none.
    pub metric: Option<String>,
    /// The metric's direction (`minimize` or `maximize`), when recorded.
    pub direction: Option<String>,
    /// Value columns: the imported file's order, else the metric first.
    pub columns: Vec<String>,
    /// Decimal places per column as recorded by an import, so that an export writes numbers alike;
    /// empty for a world the loop wrote.
    #[serde(skip)]
    pub decimals: BTreeMap<String, usize>,
    /// One row per attempt, in the order the runs were recorded.
    pub rows: Vec<LogRow>,
    /// Whether `metric` and the column order were recorded in the
    /// Experiment's metadata (an imported file) rather than guessed.
    #[serde(skip)]
    pub declared: bool,
    /// An imported file's layout (every column in its order, line ends,
    /// kept lines), which the export writes back; `None` for the loop's.
    #[serde(skip)]
    pub file: Option<FileShape>,
}

/// How an imported file was laid out, beyond its value columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileShape {
    /// Every header column, in the file's order.
    pub columns: Vec<String>,
    /// The line end the file used (`\n` or `\r\n`).
    pub line_end: String,
    /// Whether its last line ended with a line end.
    pub final_newline: bool,
    /// Lines that are not rows, after how many rows they come.
    pub kept: Vec<(usize, String)>,
    /// How many of `kept` come before the header.
    pub preamble: usize,
}

impl AttemptLog {
    /// Puts `metric` first when the log's metric was only guessed (a world
    /// the loop wrote, whose comparator the caller knows). A recorded layout
    /// is left alone.
    pub fn prefer_metric(&mut self, metric: &str, direction: Option<&str>) {
        if self.declared || !self.columns.iter().any(|c| c == metric) {
            return;
        }
        self.columns.retain(|c| c != metric);
        self.columns.insert(0, metric.to_string());
        self.metric = Some(metric.to_string());
        if let Some(d) = direction {
            self.direction = Some(d.to_string());
        }
    }
}

/// The results.tsv status of an attempt: the Outcome's, with `baseline` as
/// `keep` (it is the head the next attempts were measured against); a crashed
/// run without an Outcome is `crash`; `pending` and undecided runs have none.
pub fn tsv_status(run: &Run, outcome: Option<&Outcome>) -> Option<&'static str> {
    let status = TsvStatus::of(run, outcome);
    status.is_decided().then(|| status.as_str())
}

/// Reads the attempts of `experiment` from `world` (imported or written by
/// the loop). Cost: one pass over the world's Runs and Results.
pub fn attempt_log(world: &World, experiment: &str) -> AttemptLog {
    let record = world.experiment(experiment).map(|(_, x)| x);
    attempt_log_of(
        experiment,
        record.as_ref(),
        lifecycle::attempts(world, experiment),
    )
}

/// [`attempt_log`] of the given attempts (in recorded order) of
/// `experiment`, whose record (`None`: none found) gives the recorded
/// layout: for reads that fetch only some attempts (`log --limit`, from
/// the ledger's current state). Without a recorded layout the metric
/// columns are those of these attempts.
pub fn attempt_log_of(
    experiment: &str,
    record: Option<&Experiment>,
    attempts: Vec<lifecycle::Attempt>,
) -> AttemptLog {
    let meta = record
        .and_then(|x| x.metadata().ok())
        .unwrap_or(Value::Null);
    let metric = meta.get("metric").and_then(Value::as_str).map(String::from);
    let direction = meta
        .get("direction")
        .and_then(Value::as_str)
        .map(String::from);
    let decimals: BTreeMap<String, usize> = meta
        .get("decimals")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    let mut columns: Vec<String> = meta
        .get("columns")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                // `reason` is the log's own REASON column (the Outcome's
                // reason, which an import takes from it), not a value.
                .filter(|c| ![COMMIT, STATUS, DESCRIPTION, REASON].contains(c))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let declared = !columns.is_empty();
    let file = meta
        .get("columns")
        .and_then(Value::as_array)
        .map(|cols| FileShape {
            columns: cols
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            line_end: meta
                .get("line_end")
                .and_then(Value::as_str)
                .unwrap_or("\n")
                .to_string(),
            final_newline: meta
                .get("final_newline")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            kept: serde_json::from_value(meta.get("kept_lines").cloned().unwrap_or(Value::Null))
                .unwrap_or_default(),
            preamble: meta.get("preamble").and_then(Value::as_u64).unwrap_or(0) as usize,
        })
        .filter(|f| f.columns.iter().any(|c| c == COMMIT));
    let mut rows = Vec::new();
    for a in attempts {
        let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        let mut description = None;
        let mut texts = BTreeMap::new();
        for r in &a.results {
            let Ok(Value::Object(out)) = r.outputs() else {
                continue;
            };
            for (k, v) in out {
                if k == TEXT && a.results.len() == 1 {
                    if let Value::Object(t) = v {
                        texts = t
                            .into_iter()
                            .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                            .collect();
                    }
                    continue;
                }
                if k.starts_with('_') {
                    continue;
                }
                if k == DESCRIPTION {
                    if let Value::String(s) = v {
                        description.get_or_insert(s);
                    }
                    continue;
                }
                // Without a recorded layout, every numeric output is a column.
                if !declared && v.is_number() && !columns.contains(&k) {
                    columns.push(k.clone());
                }
                match v.as_f64() {
                    Some(x) => {
                        let e = sums.entry(k).or_insert((0.0, 0));
                        e.0 += x;
                        e.1 += 1;
                    }
                    None if v.is_string() => {
                        values.entry(k).or_insert(v);
                    }
                    None => {}
                }
            }
        }
        for (k, (sum, n)) in sums {
            values.insert(k, json!(sum / n as f64));
        }
        let description = description
            .filter(|d| !d.is_empty())
            .or_else(|| a.idea().map(String::from))
            .unwrap_or_else(|| match &a.outcome {
                Some(o) if o.status == OutcomeStatus::Baseline => o.status.to_string(),
                Some(_) => String::new(),
                None => a.run.task.clone(),
            });
        let reason = a
            .outcome
            .as_ref()
            .map(|o| o.reason.clone())
            .unwrap_or_default();
        rows.push(LogRow {
            run_id: a.run.run_id.clone(),
            commit: a.run.commit_hash.clone(),
            run_status: a.run.status.clone(),
            outcome: a
                .outcome
                .as_ref()
                .map(|o| o.status.to_string())
                .unwrap_or_default(),
            status: tsv_status(&a.run, a.outcome.as_ref()).map(String::from),
            values,
            texts,
            description,
            reason,
        });
    }
    // A recorded layout keeps the file's column order; otherwise the metric goes first.
    let metric = metric.or_else(|| columns.first().cloned());
    if !declared
        && let Some(m) = &metric
        && let Some(i) = columns.iter().position(|c| c == m)
    {
        let m = columns.remove(i);
        columns.insert(0, m);
    }
    AttemptLog {
        experiment: experiment.to_string(),
        metric,
        direction,
        columns,
        decimals,
        rows,
        declared: declared && meta.get("metric").is_some(),
        file,
    }
}

/// A commit as results.tsv writes it: a full 40-hex hash is shortened to 7.
pub fn short_commit(commit: &str) -> &str {
    if commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        &commit[..CommitHash::SHORT_LEN]
    } else {
        commit
    }
}

impl AttemptLog {
    /// A value as the file writes it, never rounded: with the decimals the
    /// imported file used (6 for the metric otherwise) where that loses
    /// nothing, else its shortest exact form; empty when the row has none
    /// (a crash has no score).
    pub fn format_value(&self, column: &str, value: Option<&Value>) -> String {
        let places = self
            .decimals
            .get(column)
            .copied()
            .or_else(|| (self.metric.as_deref() == Some(column)).then_some(6));
        match value {
            Some(Value::Number(n)) if n.is_f64() => {
                let x = n.as_f64().unwrap_or(0.0);
                match places {
                    Some(p) => fmt_f64_places(x, p),
                    None => fmt_f64(x),
                }
            }
            Some(Value::Number(n)) => match places {
                Some(p) => n.as_f64().map_or(n.to_string(), |x| fmt_f64_places(x, p)),
                None => n.to_string(),
            },
            Some(Value::String(s)) => clean(s),
            _ => String::new(),
        }
    }

    /// The results.tsv text: header, then one line per decided attempt.
    /// Returns the text and how many undecided attempts were left out. An
    /// imported file comes back in its own shape: its columns in its order,
    /// values as it printed them, its comment and section lines, its line
    /// ends; a karpathy-shaped file imported and exported is the same bytes.
    pub fn to_tsv(&self) -> (String, usize) {
        let default_shape;
        let shape = match &self.file {
            Some(f) => f,
            None => {
                let mut columns = vec![COMMIT.to_string()];
                columns.extend(self.columns.iter().cloned());
                columns.push(STATUS.to_string());
                columns.push(DESCRIPTION.to_string());
                columns.push(REASON.to_string());
                default_shape = FileShape {
                    columns,
                    line_end: "\n".into(),
                    final_newline: true,
                    kept: Vec::new(),
                    preamble: 0,
                };
                &default_shape
            }
        };
        let nl = shape.line_end.as_str();
        let mut lines: Vec<String> = Vec::with_capacity(self.rows.len() + 1);
        let mut kept = shape.kept.iter().peekable();
        // The lines before the header, then the header.
        lines.extend(kept.by_ref().take(shape.preamble).map(|(_, t)| t.clone()));
        let mut flush_kept = |lines: &mut Vec<String>, written: usize| {
            while let Some((_, text)) = kept.next_if(|(at, _)| *at <= written) {
                lines.push(text.clone());
            }
        };
        lines.push(shape.columns.join("\t"));
        let mut skipped = 0;
        let mut written = 0;
        for r in &self.rows {
            let Some(status) = &r.status else {
                skipped += 1;
                continue;
            };
            flush_kept(&mut lines, written);
            let fields: Vec<String> = shape
                .columns
                .iter()
                .map(|c| match c.as_str() {
                    COMMIT => short_commit(&r.commit).to_string(),
                    STATUS => status.clone(),
                    DESCRIPTION => clean(&r.description),
                    REASON if self.file.is_none() => clean(&r.reason),
                    _ => match r.texts.get(c) {
                        Some(t) => clean(t),
                        None => self.format_value(c, r.values.get(c)),
                    },
                })
                .collect();
            lines.push(fields.join("\t"));
            written += 1;
        }
        flush_kept(&mut lines, usize::MAX);
        let mut out = lines.join(nl);
        if shape.final_newline {
            out.push_str(nl);
        }
        (out, skipped)
    }
}

/// Text made safe for one TSV field.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}
