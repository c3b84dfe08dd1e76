//! karpathy/autoresearch's `results.tsv`: import into an experiment world the
//! lifecycle way, and export any experiment world (imported or written by the
//! loop) back into that shape.
//!
//! The file: a header `commit<TAB>val_bpb<TAB>memory_gb<TAB>status<TAB>description`
//! (any columns, in any order, as long as `commit` and `status` are there),
//! one row per attempt, `status` one of `keep`, `discard`, `crash`. UTF-8
//! with or without a byte-order mark, or UTF-16 with one (PowerShell);
//! LF or CRLF line ends. Comment (`#`), section and blank lines are kept as
//! they are and reported.
//!
//! An import is one tick, all or nothing: per new row a `Run` (stopped, or
//! crashed), a `Result` with every value column (numbers as numbers; where
//! the number would not be written back as the file had it, the text as
//! printed under [`TEXT`]) and the description, and an `Outcome`; the
//! `BranchHead` is the last kept row. A crash row has no score: its metric,
//! and its zeros in other columns (karpathy's `0.000000` placeholders), are
//! left out of the numbers. Rows are identified by their content (commit
//! and fields), not their line: a re-import adds the new rows, records a
//! row edited in place as a change of its run (visible in `history`), and
//! reports rows no longer in the file (their runs stay). The column layout,
//! metric and direction are remembered in `Experiment.metadata_json` so that
//! an export writes the file's columns in its order, byte for byte.

use autoresearch_core::lifecycle::{self, Outcome};
use autoresearch_core::num::{fmt_f64, fmt_f64_places, parse_f64};
use autoresearch_core::{
    BranchHead, CommitHash, ComponentRegistry, EntityId, EvalResult, Experiment, OutcomeStatus,
    Run, RunStatus, Storage, TsvStatus, World, experiment_world_name,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod export;
mod parse;

pub use export::{
    AttemptLog, FileShape, LogRow, REASON, attempt_log, attempt_log_of, short_commit, tsv_status,
};

/// The evaluator name of Results written by the importer.
pub const EVALUATOR: &str = "results.tsv";
/// The key, in an imported Result's outputs, of the values' text as the
/// file printed it, where the number alone would not write it back alike
/// (`3e-4` in a column of `0.04`s; a crash row's `0.000000`).
pub const TEXT: &str = "_text";
const COMMIT: &str = "commit";
const STATUS: &str = "status";
const DESCRIPTION: &str = "description";
/// Whether lower or higher metric values are better.
pub use autoresearch_core::compare::Direction;
pub use parse::*;

/// Options of an import.
#[derive(Clone, Debug)]
pub struct TsvImport {
    /// The experiment to import into; its world is the experiment's world.
    pub experiment: String,
    /// The metric column; default: the one recorded by an earlier import,
    /// else the first value column (the second column of karpathy's file).
    pub metric: Option<String>,
    /// Default: the recorded one, else minimize.
    pub direction: Option<Direction>,
    /// Make malformed rows an error (nothing is written) instead of skipping them.
    pub strict: bool,
}

/// A row that could not be imported, by its 1-based line number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Malformed {
    /// The row's line number in the file, from 1.
    pub line: usize,
    /// What is wrong with the row.
    pub reason: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// A line that is not a row (a comment, a section title, a blank line, a
/// repeated header), kept as it is and written back by the export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeptLine {
    /// Its 1-based line number in the file.
    pub line: usize,
    /// The line as it was (without its line end).
    pub text: String,
}

/// An imported run whose row is no longer in the file: it stays in the
/// ledger (history is never rewritten) and is reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gone {
    /// The run imported from the row.
    pub run_id: String,
    /// The row's commit.
    pub commit: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TsvReport {
    /// The file imported, as a display path.
    pub source: String,
    /// The world written.
    pub world: String,
    /// The experiment imported into.
    pub experiment: String,
    /// The metric column.
    pub metric: String,
    /// Which way the metric is better (`minimize` or `maximize`).
    pub direction: String,
    /// How the file was encoded (`UTF-8`, `UTF-8 with BOM`, `UTF-16LE with BOM`).
    pub encoding: String,
    /// Data rows in the file, well-formed or not.
    pub rows_read: usize,
    /// New rows.
    pub imported: usize,
    /// Rows whose run was imported before, unchanged: skipped.
    pub already_present: usize,
    /// Rows edited in place since the last import: their runs changed.
    pub changed: usize,
    /// Imported rows with status `keep`.
    pub kept: usize,
    /// Imported rows with status `discard`.
    pub discarded: usize,
    /// Imported rows with status `crash`.
    pub crashed: usize,
    /// Rows skipped as malformed (empty with `strict`, which refuses them instead).
    pub malformed: Vec<Malformed>,
    /// Comment, section and blank lines, kept for the export.
    pub kept_lines: Vec<KeptLine>,
    /// Runs imported before whose rows are no longer in the file.
    pub gone: Vec<Gone>,
    /// What changed in the recorded layout (metric, direction, a guess).
    pub notes: Vec<String>,
    /// The tick this import appended (one for all its rows); `None` when it
    /// appended none.
    pub first_tick: Option<u64>,
    /// The last tick this import appended; `None` when it appended none.
    pub last_tick: Option<u64>,
}

impl std::fmt::Display for TsvReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ticks = match self.first_tick {
            Some(a) => format!("tick {a}"),
            None => "no new tick".to_string(),
        };
        writeln!(
            f,
            "{} -> {} (experiment {}, metric {} ({}), {}, {ticks})",
            self.source, self.world, self.experiment, self.metric, self.direction, self.encoding
        )?;
        writeln!(
            f,
            "rows read {}, imported {} (keep {}, discard {}, crash {}), changed {}, already present {}, malformed {}, no longer in the file {}",
            self.rows_read,
            self.imported,
            self.kept,
            self.discarded,
            self.crashed,
            self.changed,
            self.already_present,
            self.malformed.len(),
            self.gone.len()
        )?;
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for m in &self.malformed {
            writeln!(f, "malformed: {m}")?;
        }
        for g in &self.gone {
            writeln!(
                f,
                "no longer in the file: run {} (commit {}), kept in the ledger",
                g.run_id, g.commit
            )?;
        }
        if !self.kept_lines.is_empty() {
            writeln!(
                f,
                "kept {} comment, section or blank lines as they are",
                self.kept_lines.len()
            )?;
        }
        Ok(())
    }
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum TsvError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The header is missing, lacks the `commit` or `status` column, names
    /// a column twice, or has no numeric column of the metric's name.
    #[error("reading {path}: {reason}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        reason: String,
    },
    /// The file is neither UTF-8 nor UTF-16 with a byte-order mark.
    #[error("reading {path}: {reason}")]
    Encoding {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// With `strict`, the file has malformed rows; nothing was written.
    #[error("reading {path}: {} malformed rows (--strict): {}", rows.len(), list(rows))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Every malformed row, in file order.
        rows: Vec<Malformed>,
    },
    /// Reading or writing the world failed.
    #[error("importing {path} into world {world:?}: {source}")]
    Ledger {
        /// The file being imported.
        path: PathBuf,
        /// The world written.
        world: String,
        /// The ledger's error.
        #[source]
        source: autoresearch_core::Error,
    },
    /// The experiment is one the loop runs: an import would mix other
    /// history into its log and move its head to commits it never measured.
    #[error(
        "importing {path}: experiment {experiment:?} (world {world:?}) is run by `autoresearch run`, not imported; import into another name, e.g. --experiment {experiment}-import"
    )]
    LoopExperiment {
        /// The file being imported.
        path: PathBuf,
        /// The loop's experiment.
        experiment: String,
        /// Its world.
        world: String,
    },
}

fn list(rows: &[Malformed]) -> String {
    const SHOWN: usize = 20;
    let mut s = rows
        .iter()
        .take(SHOWN)
        .map(Malformed::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if rows.len() > SHOWN {
        s.push_str(&format!("; and {} more", rows.len() - SHOWN));
    }
    s
}

/// Reads the file at `path` and decodes it ([`decode`]): its text and the
/// encoding's name. Errors name the file.
pub(crate) async fn read_text(path: &Path) -> Result<(String, &'static str), TsvError> {
    let bytes = tokio::fs::read(path).await.map_err(|source| TsvError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&bytes).map_err(|reason| TsvError::Encoding {
        path: path.to_path_buf(),
        reason,
    })
}

fn new_run_id(experiment: &str, line: usize, taken: &HashSet<String>) -> String {
    let base = run_id_for(experiment, line);
    let mut id = base.clone();
    let mut n = 1;
    while taken.contains(&id) {
        n += 1;
        id = format!("{base}-{n}");
    }
    id
}

/// Imports `path` into world `autoresearch:{experiment}` as one tick (all or
/// nothing): its layout, every new row and every row changed since the last
/// import, and the head. A new experiment is created in a tick of its own
/// just before (the point a replay or a fork of the imported history starts
/// from). Input errors leave the
/// ledger unchanged. Cost: one pass over the file and over the experiment's
/// runs.
pub async fn import(
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    path: &Path,
    opts: &TsvImport,
) -> Result<TsvReport, TsvError> {
    let (text, encoding) = read_text(path).await?;
    import_with(
        storage,
        registry,
        path,
        opts,
        encoding,
        |metric, direction| parse(&text, metric, direction),
    )
    .await
}

/// The import itself, for any source that parses into rows: `parse` is
/// given the metric and direction to use (the options', else the recorded
/// ones) and returns the rows.
pub(crate) async fn import_with(
    storage: Arc<dyn Storage>,
    registry: Arc<ComponentRegistry>,
    path: &Path,
    opts: &TsvImport,
    encoding: &str,
    parse: impl FnOnce(Option<&str>, Option<Direction>) -> Result<Parsed, String>,
) -> Result<TsvReport, TsvError> {
    let world_name = experiment_world_name(&opts.experiment);
    let ledger_err = |source| TsvError::Ledger {
        path: path.to_path_buf(),
        world: world_name.clone(),
        source,
    };
    // An existing world is read first (its recorded layout decides the
    // defaults); a new one is created only once the file has parsed.
    let existing = match storage.find_world(&world_name).await {
        Ok(Some(_)) => Some(
            World::open(storage.clone(), registry.clone(), &world_name)
                .await
                .map_err(ledger_err)?,
        ),
        Ok(None) => None,
        Err(e) => return Err(ledger_err(e.into())),
    };
    let recorded = existing
        .as_ref()
        .and_then(|w| w.experiment(&opts.experiment));
    if recorded.as_ref().is_some_and(|(_, e)| e.is_run_by_loop()) {
        return Err(TsvError::LoopExperiment {
            path: path.to_path_buf(),
            experiment: opts.experiment.clone(),
            world: world_name,
        });
    }
    let meta = recorded
        .as_ref()
        .and_then(|(_, e)| e.metadata().ok())
        .unwrap_or(Value::Null);
    let old_metric = meta.get("metric").and_then(Value::as_str).map(String::from);
    let old_direction = meta
        .get("direction")
        .and_then(Value::as_str)
        .and_then(Direction::parse);
    let metric = opts.metric.clone().or(old_metric.clone());
    let parsed = parse(metric.as_deref(), opts.direction.or(old_direction)).map_err(|reason| {
        TsvError::Header {
            path: path.to_path_buf(),
            reason,
        }
    })?;
    let direction = parsed.layout.direction;
    if opts.strict && !parsed.malformed.is_empty() {
        return Err(TsvError::Malformed {
            path: path.to_path_buf(),
            rows: parsed.malformed,
        });
    }
    let mut report = TsvReport {
        source: path.display().to_string(),
        world: world_name.clone(),
        experiment: opts.experiment.clone(),
        metric: parsed.layout.metric.clone(),
        direction: direction.long().to_string(),
        encoding: encoding.to_string(),
        rows_read: parsed.rows.len() + parsed.malformed.len(),
        malformed: parsed.malformed.clone(),
        kept_lines: parsed.kept_lines.clone(),
        ..TsvReport::default()
    };
    report.notes.extend(parsed.hint.clone());
    if let Some(old) = old_metric.filter(|m| *m != parsed.layout.metric) {
        report.notes.push(format!(
            "metric changed from {old} to {}: the head and every later decision read {}",
            parsed.layout.metric, parsed.layout.metric
        ));
    }
    if let Some(old) = old_direction.filter(|d| *d != direction) {
        report.notes.push(format!(
            "direction changed from {} to {}",
            old.long(),
            direction.long()
        ));
    }
    // Not one row read into a new experiment: nothing is created (no
    // empty world left behind by a file that could not be imported).
    if existing.is_none() && parsed.rows.is_empty() {
        return Ok(report);
    }
    let mut world = match existing {
        Some(w) => w,
        None => World::open_or_create(storage, registry, &world_name)
            .await
            .map_err(ledger_err)?,
    };
    // A new experiment gets a tick of its own before its rows: the point
    // `replay` and `fork` start from (every row decided after it).
    if world.experiment(&opts.experiment).is_none() {
        let x = Experiment::new(
            opts.experiment.clone(),
            "",
            "main",
            0,
            &json!({"source": EVALUATOR}),
        );
        world.spawn_with(&x).map_err(ledger_err)?;
        world
            .spawn_with(&BranchHead::new(
                opts.experiment.clone(),
                "",
                "",
                &json!({}),
                0,
            ))
            .map_err(ledger_err)?;
        report.first_tick = Some(world.commit().await.map_err(ledger_err)?.0);
    }
    write_rows(&mut world, &parsed, opts, &mut report).map_err(ledger_err)?;
    if !world.pending().is_empty() {
        let tick = world.commit().await.map_err(ledger_err)?.0;
        report.first_tick.get_or_insert(tick);
        report.last_tick = Some(tick);
    }
    Ok(report)
}

/// A run imported earlier, as the matching sees it.
struct Imported {
    run_entity: EntityId,
    result_entity: Option<EntityId>,
    run_id: String,
    commit: String,
    key: String,
}

/// The experiment's imported runs (Results of [`EVALUATOR`]), in order.
fn imported_runs(world: &World, exp: &str) -> Vec<Imported> {
    let mut results: HashMap<String, (EntityId, EvalResult)> = HashMap::new();
    for (e, r) in world.find_all::<EvalResult>(|r| r.evaluator == EVALUATOR) {
        results.entry(r.run_id.clone()).or_insert((e, r));
    }
    let mut out = Vec::new();
    for (entity, run) in world.find_all::<Run>(|r| r.experiment_name == exp) {
        let Some((result_entity, result)) = results.remove(&run.run_id) else {
            continue;
        };
        let Some(outcome) = world.get::<Outcome>(entity) else {
            continue;
        };
        let outputs = match result.outputs() {
            Ok(Value::Object(o)) => o,
            _ => Map::new(),
        };
        let description = outputs
            .get(DESCRIPTION)
            .and_then(Value::as_str)
            .unwrap_or(&outcome.reason)
            .to_string();
        let values: Vec<(String, Value)> = outputs
            .into_iter()
            .filter(|(k, _)| k != DESCRIPTION && !k.starts_with('_'))
            .collect();
        out.push(Imported {
            run_entity: entity,
            result_entity: Some(result_entity),
            key: row_key(&run.commit_hash, &outcome.status, &description, &values),
            run_id: run.run_id,
            commit: run.commit_hash,
        });
    }
    out
}

/// What becomes of each row of the file.
enum Plan {
    Same(usize),
    Changed(usize),
    New,
}

fn write_rows(
    world: &mut World,
    parsed: &Parsed,
    opts: &TsvImport,
    report: &mut TsvReport,
) -> Result<(), autoresearch_core::Error> {
    let exp = &opts.experiment;
    let metadata = parsed.layout.metadata();
    match world.experiment(exp) {
        None => {
            world.spawn_with(&Experiment::new(exp.clone(), "", "main", 0, &metadata))?;
        }
        Some((e, x)) => {
            if x.metadata().ok().as_ref() != Some(&metadata) {
                let mut x = x.clone();
                x.metadata_json = metadata.to_string();
                world.insert(e, &x)?;
            }
        }
    }
    let old = imported_runs(world, exp);
    let mut taken: HashSet<String> = world
        .find_all::<Run>(|r| &r.experiment_name == exp)
        .into_iter()
        .map(|(_, r)| r.run_id)
        .collect();
    // Exact content first, then what is left by commit (an edit in place).
    let mut by_key: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (i, o) in old.iter().enumerate() {
        by_key.entry(o.key.as_str()).or_default().push_back(i);
    }
    let keys: Vec<String> = parsed.rows.iter().map(TsvRow::key).collect();
    let mut used = vec![false; old.len()];
    let mut plan: Vec<Plan> = keys
        .iter()
        .map(
            |k| match by_key.get_mut(k.as_str()).and_then(VecDeque::pop_front) {
                Some(i) => {
                    used[i] = true;
                    Plan::Same(i)
                }
                None => Plan::New,
            },
        )
        .collect();
    let mut by_commit: HashMap<&str, VecDeque<usize>> = HashMap::new();
    for (i, o) in old.iter().enumerate().filter(|(i, _)| !used[*i]) {
        by_commit.entry(o.commit.as_str()).or_default().push_back(i);
    }
    for (p, row) in plan.iter_mut().zip(&parsed.rows) {
        if matches!(p, Plan::New)
            && let Some(i) = by_commit
                .get_mut(row.commit.as_str())
                .and_then(VecDeque::pop_front)
        {
            used[i] = true;
            *p = Plan::Changed(i);
        }
    }
    report.gone = old
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(o, _)| Gone {
            run_id: o.run_id.clone(),
            commit: o.commit.clone(),
        })
        .collect();

    let metric = &parsed.layout.metric;
    let mut base = String::new();
    let mut head: Option<(String, String, Value)> = None;
    for (row, p) in parsed.rows.iter().zip(&plan) {
        let run_id = match p {
            Plan::Same(i) => old[*i].run_id.clone(),
            Plan::Changed(i) => old[*i].run_id.clone(),
            Plan::New => {
                let id = new_run_id(exp, row.line, &taken);
                taken.insert(id.clone());
                id
            }
        };
        if !matches!(p, Plan::Same(_)) {
            write_row(world, exp, row, &run_id, &base, p, &old)?;
        }
        // The breakdown of `imported`: new rows only (a changed row is
        // counted in `changed`).
        if matches!(p, Plan::New) {
            match row.status {
                OutcomeStatus::Keep => report.kept += 1,
                OutcomeStatus::Discard => report.discarded += 1,
                _ => report.crashed += 1,
            }
        }
        match p {
            Plan::Same(_) => report.already_present += 1,
            Plan::Changed(_) => report.changed += 1,
            Plan::New => report.imported += 1,
        }
        if row.status == OutcomeStatus::Keep {
            base = row.commit.clone();
            let value = row
                .values
                .iter()
                .find(|(c, _)| c == metric)
                .map_or(Value::Null, |(_, v)| v.clone());
            head = Some((row.commit.clone(), run_id, json!({ metric.clone(): value })));
        }
    }
    let (commit, run_id, descriptor) = head.unwrap_or((String::new(), String::new(), json!({})));
    let new_head = BranchHead::new(exp.clone(), commit, run_id, &descriptor, 0);
    match world.branch_head(exp) {
        Some((e, h)) if h != new_head => world.insert(e, &new_head)?,
        Some(_) => {}
        None => {
            world.spawn_with(&new_head)?;
        }
    }
    Ok(())
}

/// Writes one new or changed row: its Run, Result and Outcome.
fn write_row(
    world: &mut World,
    exp: &str,
    row: &TsvRow,
    run_id: &str,
    base: &str,
    plan: &Plan,
    old: &[Imported],
) -> Result<(), autoresearch_core::Error> {
    let crash = row.status == OutcomeStatus::Crash;
    let (run_entity, result_entity, mut run) = match plan {
        Plan::Changed(i) => {
            let o = &old[*i];
            let run = world
                .get::<Run>(o.run_entity)
                .unwrap_or_else(|| Run::new(run_id, exp));
            (Some(o.run_entity), o.result_entity, run)
        }
        _ => (None, None, Run::new(run_id, exp)),
    };
    run.set_status(if crash {
        RunStatus::Crashed
    } else {
        RunStatus::Stopped
    });
    run.commit_hash = row.commit.clone();
    run.task = row.description.clone();
    let run_entity = match run_entity {
        Some(e) => {
            world.insert(e, &run)?;
            e
        }
        None => world.spawn_with(&run)?,
    };
    let result = EvalResult::new(run_id, EVALUATOR, &Value::Object(row.outputs()), 0);
    match result_entity {
        Some(e) => world.insert(e, &result)?,
        None => {
            world.spawn_with(&result)?;
        }
    }
    world.insert(
        run_entity,
        &Outcome {
            run_id: run_id.to_string(),
            status: row.status.clone(),
            // A `reason` column (a results.tsv that `log --format tsv`
            // wrote) is the decision's reason; else the description.
            reason: row
                .values
                .iter()
                .find(|(k, _)| k == REASON)
                .and_then(|(_, v)| v.as_str())
                .unwrap_or(&row.description)
                .to_string(),
            descriptor_json: "{}".to_string(),
            base_commit: base.to_string(),
            comparator: EVALUATOR.to_string(),
            decided_at_ms: 0,
        },
    )
}
