//! karpathy/autoresearch's `results.tsv`: import into an experiment world the
//! lifecycle way, and export any experiment world (imported or written by the
//! loop) back into that shape.
//!
//! The file: a header `commit<TAB>val_bpb<TAB>memory_gb<TAB>status<TAB>description`
//! (any numeric columns between), one row per attempt, `status` one of
//! `keep`, `discard`, `crash`. Import writes, per row, one tick holding a
//! `Run` (stopped, or crashed), a `Result` with every numeric column and the
//! description, and an `Outcome`; a kept row also moves the `BranchHead`.
//! The column layout is remembered in `Experiment.metadata_json` so that an
//! export reproduces an equivalent file.

use autoresearch_core::lifecycle::{self, Outcome};
use autoresearch_core::num::{fmt_f64, fmt_f64_places};
use autoresearch_core::{
    BranchHead, CommitHash, ComponentRegistry, EvalResult, Experiment, OutcomeStatus, Run,
    RunStatus, Storage, TsvStatus, World, experiment_world_name,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The evaluator name of Results written by the importer.
pub const EVALUATOR: &str = "results.tsv";
const COMMIT: &str = "commit";
const STATUS: &str = "status";
const DESCRIPTION: &str = "description";

/// Whether lower or higher metric values are better. Recorded, not interpreted.
pub use autoresearch_core::compare::Direction;

/// Options of an import.
#[derive(Clone, Debug)]
pub struct TsvImport {
    pub experiment: String,
    /// The metric column; default the second column.
    pub metric: Option<String>,
    /// Default: minimize.
    pub direction: Option<Direction>,
    /// Make malformed rows an error (nothing is written) instead of skipping them.
    pub strict: bool,
}

/// A row that could not be imported, by its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Malformed {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TsvReport {
    pub source: String,
    pub world: String,
    pub experiment: String,
    pub metric: String,
    pub rows_read: usize,
    pub imported: usize,
    /// Rows whose run (by line) was imported before: skipped.
    pub already_present: usize,
    pub kept: usize,
    pub discarded: usize,
    pub crashed: usize,
    pub malformed: Vec<Malformed>,
    pub first_tick: Option<u64>,
    pub last_tick: Option<u64>,
}

impl std::fmt::Display for TsvReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ticks = match (self.first_tick, self.last_tick) {
            (Some(a), Some(b)) => format!("ticks {a}..={b}"),
            _ => "no new tick".to_string(),
        };
        writeln!(
            f,
            "{} -> {} (experiment {}, metric {}, {ticks})",
            self.source, self.world, self.experiment, self.metric
        )?;
        writeln!(
            f,
            "rows read {}, imported {} (keep {}, discard {}, crash {}), already present {}, malformed {}",
            self.rows_read,
            self.imported,
            self.kept,
            self.discarded,
            self.crashed,
            self.already_present,
            self.malformed.len()
        )?;
        for m in &self.malformed {
            writeln!(f, "malformed: {m}")?;
        }
        Ok(())
    }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum TsvError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {reason}")]
    Header { path: PathBuf, reason: String },
    #[error("reading {path}: {} malformed rows (--strict): {}", rows.len(), list(rows))]
    Malformed { path: PathBuf, rows: Vec<Malformed> },
    #[error("importing {path} into world {world:?}: {source}")]
    Ledger {
        path: PathBuf,
        world: String,
        #[source]
        source: autoresearch_core::Error,
    },
    /// The experiment is one the loop runs: an import would mix other
    /// history into its log and move its head to commits it never measured.
    #[error(
        "importing {path}: experiment {experiment:?} (world {world:?}) is run by `autoresearch run`, not imported; import into another name, e.g. --experiment {experiment}-import"
    )]
    LoopExperiment {
        path: PathBuf,
        experiment: String,
        world: String,
    },
}

fn list(rows: &[Malformed]) -> String {
    rows.iter()
        .map(Malformed::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The layout of a results file, kept in `Experiment.metadata_json`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Every header column, in order.
    pub columns: Vec<String>,
    pub metric: String,
    pub direction: Direction,
    /// Decimal places seen per numeric column, to write numbers back alike.
    pub decimals: BTreeMap<String, usize>,
}

impl Layout {
    fn metadata(&self) -> Value {
        json!({
            "source": EVALUATOR,
            "columns": self.columns,
            "metric": self.metric,
            "direction": self.direction.long(),
            "decimals": self.decimals,
        })
    }

    /// Numeric columns: every column but commit, status and description.
    fn value_columns(&self) -> impl Iterator<Item = &String> {
        self.columns
            .iter()
            .filter(|c| ![COMMIT, STATUS, DESCRIPTION].contains(&c.as_str()))
    }
}

/// One well-formed row.
#[derive(Clone, Debug, PartialEq)]
pub struct TsvRow {
    pub line: usize,
    pub commit: String,
    /// `keep`, `discard` or `crash`.
    pub status: OutcomeStatus,
    /// Numeric columns as numbers; a non-numeric value in a non-metric column
    /// is kept as text. Absent in a crash row when not a number.
    pub values: Vec<(String, Value)>,
    pub description: String,
}

/// A parsed file.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub layout: Layout,
    pub rows: Vec<TsvRow>,
    pub malformed: Vec<Malformed>,
}

fn decimals(text: &str) -> usize {
    text.split_once('.').map_or(0, |(_, f)| {
        f.chars().take_while(char::is_ascii_digit).count()
    })
}

/// Parses results.tsv text. Errors (as a reason) only on an unusable header;
/// bad rows are collected in `malformed`.
pub fn parse(text: &str, metric: Option<&str>, direction: Direction) -> Result<Parsed, String> {
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let (_, header) = lines
        .by_ref()
        .find(|(_, l)| !l.trim().is_empty())
        .ok_or("the file is empty (expected a header like commit<TAB>val_bpb<TAB>...)")?;
    let columns: Vec<String> = header.split('\t').map(|c| c.trim().to_string()).collect();
    for need in [COMMIT, STATUS] {
        if !columns.iter().any(|c| c == need) {
            return Err(format!(
                "the header has no `{need}` column (header: {header:?})"
            ));
        }
    }
    let mut uniq = HashSet::new();
    if let Some(dup) = columns.iter().find(|c| !uniq.insert(c.as_str())) {
        return Err(format!("the header names column `{dup}` twice"));
    }
    let metric = match metric {
        Some(m) => m.to_string(),
        None => columns
            .get(1)
            .cloned()
            .ok_or("the header has no second column to use as the metric")?,
    };
    if [COMMIT, STATUS, DESCRIPTION].contains(&metric.as_str()) || !columns.contains(&metric) {
        return Err(format!(
            "metric column `{metric}` is not a numeric column of the header {header:?}"
        ));
    }
    let mut layout = Layout {
        columns,
        metric,
        direction,
        decimals: BTreeMap::new(),
    };
    let mut rows = Vec::new();
    let mut malformed = Vec::new();
    for (line, text) in lines {
        if text.trim().is_empty() {
            continue;
        }
        match parse_row(&mut layout, line, text) {
            Ok(row) => rows.push(row),
            Err(reason) => malformed.push(Malformed { line, reason }),
        }
    }
    Ok(Parsed {
        layout,
        rows,
        malformed,
    })
}

fn parse_row(layout: &mut Layout, line: usize, text: &str) -> Result<TsvRow, String> {
    let fields: Vec<&str> = text.split('\t').collect();
    if fields.len() != layout.columns.len() {
        return Err(format!(
            "{} columns, the header has {}",
            fields.len(),
            layout.columns.len()
        ));
    }
    let field = |name: &str| -> &str {
        layout
            .columns
            .iter()
            .position(|c| c == name)
            .map_or("", |i| fields[i].trim())
    };
    let commit = field(COMMIT).to_string();
    let word = field(STATUS);
    let status = OutcomeStatus::from_word(word);
    let description = field(DESCRIPTION).to_string();
    if commit.is_empty() {
        return Err("empty commit".to_string());
    }
    if !matches!(
        status,
        OutcomeStatus::Keep | OutcomeStatus::Discard | OutcomeStatus::Crash
    ) {
        return Err(format!("status {word:?} is not keep, discard or crash"));
    }
    let crash = status == OutcomeStatus::Crash;
    let mut values = Vec::new();
    let mut seen_decimals = Vec::new();
    for col in layout.value_columns() {
        let raw = field(col);
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() => {
                values.push((col.clone(), json!(v)));
                seen_decimals.push((col.clone(), decimals(raw)));
            }
            _ if col == &layout.metric && !crash => {
                return Err(format!("metric {col} {raw:?} is not a number"));
            }
            _ if crash || raw.is_empty() => {}
            _ => values.push((col.clone(), json!(raw))),
        }
    }
    for (col, d) in seen_decimals {
        let e = layout.decimals.entry(col).or_insert(0);
        *e = (*e).max(d);
    }
    Ok(TsvRow {
        line,
        commit,
        status,
        values,
        description,
    })
}

/// The run id an imported line gets: stable, so re-importing skips it.
pub fn run_id_for(experiment: &str, line: usize) -> String {
    format!("{experiment}-tsv-L{line}")
}

/// Imports `path` into world `autoresearch:{experiment}`: one tick creating the
/// experiment (if new), then one tick per row. Rows imported before (same
/// line) are skipped. Input errors leave the ledger unchanged.
pub async fn import(
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    path: &Path,
    opts: &TsvImport,
) -> Result<TsvReport, TsvError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| TsvError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let parsed = parse(
        &text,
        opts.metric.as_deref(),
        opts.direction.unwrap_or_default(),
    )
    .map_err(|reason| TsvError::Header {
        path: path.to_path_buf(),
        reason,
    })?;
    if opts.strict && !parsed.malformed.is_empty() {
        return Err(TsvError::Malformed {
            path: path.to_path_buf(),
            rows: parsed.malformed,
        });
    }
    let world_name = experiment_world_name(&opts.experiment);
    let ledger_err = |source| TsvError::Ledger {
        path: path.to_path_buf(),
        world: world_name.clone(),
        source,
    };
    let mut world = World::open_or_create(storage, registry, &world_name)
        .await
        .map_err(ledger_err)?;
    if world
        .experiment(&opts.experiment)
        .is_some_and(|(_, e)| e.is_run_by_loop())
    {
        return Err(TsvError::LoopExperiment {
            path: path.to_path_buf(),
            experiment: opts.experiment.clone(),
            world: world_name,
        });
    }
    let mut report = TsvReport {
        source: path.display().to_string(),
        world: world_name.clone(),
        experiment: opts.experiment.clone(),
        metric: parsed.layout.metric.clone(),
        rows_read: parsed.rows.len() + parsed.malformed.len(),
        malformed: parsed.malformed.clone(),
        ..TsvReport::default()
    };
    let mut ticks = Vec::new();
    write_rows(&mut world, &parsed, opts, &mut report, &mut ticks)
        .await
        .map_err(ledger_err)?;
    report.first_tick = ticks.first().copied();
    report.last_tick = ticks.last().copied();
    Ok(report)
}

async fn write_rows(
    world: &mut World,
    parsed: &Parsed,
    opts: &TsvImport,
    report: &mut TsvReport,
    ticks: &mut Vec<u64>,
) -> Result<(), autoresearch_core::Error> {
    let exp = &opts.experiment;
    if world.experiment(exp).is_none() {
        world.spawn_with(&Experiment::new(
            exp.clone(),
            "",
            "main",
            0,
            &parsed.layout.metadata(),
        ))?;
    }
    let head_entity = match world.branch_head(exp) {
        Some((e, _)) => e,
        None => world.spawn_with(&BranchHead::new(exp.clone(), "", "", &json!({}), 0))?,
    };
    if !world.pending().is_empty() {
        ticks.push(world.commit().await?.0);
    }
    let existing: HashSet<String> = world
        .find_all::<Run>(|r| &r.experiment_name == exp)
        .into_iter()
        .map(|(_, r)| r.run_id)
        .collect();
    for row in &parsed.rows {
        let run_id = run_id_for(exp, row.line);
        if existing.contains(&run_id) {
            report.already_present += 1;
            continue;
        }
        let crash = row.status == OutcomeStatus::Crash;
        let mut run = Run::new(run_id.clone(), exp.clone());
        run.set_status(if crash {
            RunStatus::Crashed
        } else {
            RunStatus::Stopped
        });
        run.commit_hash = row.commit.clone();
        run.task = row.description.clone();
        let run_entity = world.spawn_with(&run)?;
        let mut outputs: Map<String, Value> = row.values.iter().cloned().collect();
        outputs.insert(DESCRIPTION.to_string(), json!(row.description));
        world.spawn_with(&EvalResult::new(
            run_id.clone(),
            EVALUATOR,
            &Value::Object(outputs),
            0,
        ))?;
        let base = world
            .get::<BranchHead>(head_entity)
            .map(|h| h.commit_hash)
            .unwrap_or_default();
        world.insert(
            run_entity,
            &Outcome {
                run_id: run_id.clone(),
                status: row.status.clone(),
                reason: row.description.clone(),
                descriptor_json: "{}".to_string(),
                base_commit: base,
                comparator: EVALUATOR.to_string(),
                decided_at_ms: 0,
            },
        )?;
        match row.status {
            OutcomeStatus::Keep => {
                let metric = row
                    .values
                    .iter()
                    .find(|(c, _)| c == &parsed.layout.metric)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null);
                let descriptor = json!({ parsed.layout.metric.clone(): metric });
                world.insert(
                    head_entity,
                    &BranchHead::new(exp.clone(), row.commit.clone(), run_id, &descriptor, 0),
                )?;
                report.kept += 1;
            }
            OutcomeStatus::Discard => report.discarded += 1,
            _ => report.crashed += 1,
        }
        ticks.push(world.commit().await?.0);
        report.imported += 1;
    }
    Ok(())
}

/// One attempt as `log` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogRow {
    #[serde(rename = "run__run_id")]
    pub run_id: String,
    #[serde(rename = "run__commit_hash")]
    pub commit: String,
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
    pub description: String,
}

/// The attempts of one experiment in results.tsv terms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AttemptLog {
    pub experiment: String,
    pub metric: Option<String>,
    pub direction: Option<String>,
    /// Value columns: the imported file's order, else the metric first.
    pub columns: Vec<String>,
    #[serde(skip)]
    pub decimals: BTreeMap<String, usize>,
    pub rows: Vec<LogRow>,
    /// Whether `metric` and the column order were recorded in the
    /// Experiment's metadata (an imported file) rather than guessed.
    #[serde(skip)]
    pub declared: bool,
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
    let meta = world
        .experiment(experiment)
        .and_then(|(_, x)| x.metadata().ok())
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
                .filter(|c| ![COMMIT, STATUS, DESCRIPTION].contains(c))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let declared = !columns.is_empty();
    let mut rows = Vec::new();
    for a in lifecycle::attempts(world, experiment) {
        let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        let mut values: BTreeMap<String, Value> = BTreeMap::new();
        let mut description = None;
        for r in &a.results {
            let Ok(Value::Object(out)) = r.outputs() else {
                continue;
            };
            for (k, v) in out {
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
            .or_else(|| {
                a.outcome
                    .as_ref()
                    .map(|o| o.reason.clone())
                    .filter(|r| !r.is_empty())
            })
            .unwrap_or_else(|| a.run.task.clone());
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
            description,
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
    /// Returns the text and how many undecided attempts were left out.
    pub fn to_tsv(&self) -> (String, usize) {
        let mut out = String::new();
        let mut header = vec![COMMIT.to_string()];
        header.extend(self.columns.iter().cloned());
        header.push(STATUS.to_string());
        header.push(DESCRIPTION.to_string());
        out.push_str(&header.join("\t"));
        out.push('\n');
        let mut skipped = 0;
        for r in &self.rows {
            let Some(status) = &r.status else {
                skipped += 1;
                continue;
            };
            let mut fields = vec![short_commit(&r.commit).to_string()];
            for c in &self.columns {
                fields.push(self.format_value(c, r.values.get(c)));
            }
            fields.push(status.clone());
            fields.push(clean(&r.description));
            out.push_str(&fields.join("\t"));
            out.push('\n');
        }
        (out, skipped)
    }
}

/// Text made safe for one TSV field.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}
