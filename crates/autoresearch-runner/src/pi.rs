//! pi-autoresearch's experiment log (`autoresearch.jsonl`): imported like a
//! results.tsv ([`crate::tsv`]), into the same shape and with the same rules
//! (one tick, rows matched by content on re-import, crash scores left out).
//!
//! The file, as pi-autoresearch writes it: JSON lines; a config header
//! `{"type":"config","name":…,"metricName":"total_ms","metricUnit":"ms","bestDirection":"lower"}`
//! starts each segment, then one line per run
//! `{"run":1,"commit":"abc1234","metric":1620,"metrics":{"size_kib":5015},"status":"keep","description":…,"timestamp":…,"confidence":…,"asi":{…}}`
//! with `status` one of `keep`, `discard`, `crash`, `checks_failed` (a crash
//! here). Other typed lines (`{"type":"hook",…}`) are kept out and counted.
//! The metric and direction are the last config header's unless `--metric`,
//! `--minimize` or `--maximize` say otherwise; its unit is recorded under
//! `_units`, and the run's own fields (`run`, `timestamp`, `confidence`,
//! `asi`, the original status) under `_pi` in the Result's outputs.

use crate::tsv::{
    self, Direction, KeptLine, Layout, Malformed, Parsed, TsvError, TsvImport, TsvReport, TsvRow,
};
use autoresearch_core::OutcomeStatus;
use autoresearch_core::metrics::UNITS;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The evaluator name of Results this importer writes.
pub const EVALUATOR: &str = tsv::EVALUATOR;
/// The key, in an imported Result's outputs, of pi's own fields of the run.
pub const PI: &str = "_pi";

/// Imports pi-autoresearch's `autoresearch.jsonl` at `path` into world
/// `autoresearch:{experiment}`; see the module docs.
pub async fn import(
    storage: Arc<dyn autoresearch_core::Storage>,
    registry: Arc<autoresearch_core::ComponentRegistry>,
    path: &Path,
    opts: &TsvImport,
) -> Result<TsvReport, TsvError> {
    let (text, encoding) = tsv::read_text(path).await?;
    let opts_metric = opts.metric.clone();
    tsv::import_with(
        storage,
        registry,
        path,
        opts,
        encoding,
        |recorded, direction| {
            // The file's own header wins over an earlier import's, an option
            // over both.
            parse(&text, opts_metric.as_deref(), recorded, direction)
        },
    )
    .await
}

/// Parses the log. `metric`: the option; `recorded`: what an earlier import
/// recorded (used when the file has no config header).
pub fn parse(
    text: &str,
    metric: Option<&str>,
    recorded: Option<&str>,
    direction: Option<Direction>,
) -> Result<Parsed, String> {
    let mut config: Option<(String, String, Direction)> = None;
    let mut segments = 0;
    let mut runs: Vec<(usize, Map<String, Value>)> = Vec::new();
    let mut malformed = Vec::new();
    let mut kept_lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let t = line.trim().trim_start_matches('\u{feff}');
        if t.is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<Value>(t) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                malformed.push(Malformed {
                    line: n,
                    reason: "not a JSON object".into(),
                });
                continue;
            }
            Err(e) => {
                malformed.push(Malformed {
                    line: n,
                    reason: format!("not JSON: {e}"),
                });
                continue;
            }
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("config") => {
                segments += 1;
                let field = |a: &str, b: &str| {
                    obj.get(a)
                        .or_else(|| obj.get(b))
                        .and_then(Value::as_str)
                        .map(String::from)
                };
                let dir = match field("bestDirection", "direction").as_deref() {
                    Some("higher" | "max" | "maximize") => Direction::Maximize,
                    None | Some("lower" | "min" | "minimize") => Direction::Minimize,
                    Some(other) => {
                        malformed.push(Malformed {
                            line: n,
                            reason: format!(
                                "config: bestDirection {other:?} is not \"lower\" or \"higher\"; the config line is ignored"
                            ),
                        });
                        continue;
                    }
                };
                let name = field("metricName", "metric_name").unwrap_or_else(|| "metric".into());
                if name.trim().is_empty() {
                    malformed.push(Malformed {
                        line: n,
                        reason: "config: metricName is empty; the config line is ignored".into(),
                    });
                    continue;
                }
                config = Some((
                    name,
                    field("metricUnit", "metric_unit").unwrap_or_default(),
                    dir,
                ));
            }
            None | Some("result") => runs.push((n, obj)),
            Some(_) => kept_lines.push(KeptLine {
                line: n,
                text: line.to_string(),
            }),
        }
    }
    let (file_metric, unit, file_direction) = match &config {
        Some((m, u, d)) => (Some(m.clone()), u.clone(), Some(*d)),
        None => (None, String::new(), None),
    };
    let metric = metric
        .map(String::from)
        .or(file_metric)
        .or(recorded.map(String::from))
        .unwrap_or_else(|| "metric".into());
    let direction = direction.or(file_direction).unwrap_or_default();
    let mut secondary: Vec<String> = Vec::new();
    for (_, o) in &runs {
        if let Some(Value::Object(m)) = o.get("metrics") {
            for k in m.keys() {
                if *k != metric && !secondary.contains(k) {
                    secondary.push(k.clone());
                }
            }
        }
    }
    let mut columns = vec!["commit".to_string(), metric.clone()];
    columns.extend(secondary.iter().cloned());
    columns.push("status".into());
    columns.push("description".into());
    let mut rows = Vec::new();
    for (n, o) in runs {
        match row(&o, n, &metric, &unit) {
            Ok(r) => rows.push(r),
            Err(reason) => malformed.push(Malformed { line: n, reason }),
        }
    }
    malformed.sort_by_key(|m| m.line);
    let mut hint = None;
    if segments > 1 {
        hint = Some(format!(
            "{segments} segments (config headers); all imported, with the last header's metric {metric}"
        ));
    }
    Ok(Parsed {
        layout: Layout {
            columns,
            metric: metric.clone(),
            direction,
            // No fixed places: numbers are written in their shortest exact form.
            decimals: std::iter::once(&metric)
                .chain(&secondary)
                .map(|c| (c.clone(), 0))
                .collect::<BTreeMap<_, _>>(),
            line_end: "\n".into(),
            final_newline: true,
            kept: Vec::new(),
            preamble: 0,
        },
        rows,
        malformed,
        kept_lines,
        hint,
    })
}

fn row(o: &Map<String, Value>, line: usize, metric: &str, unit: &str) -> Result<TsvRow, String> {
    let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let commit = text("commit");
    if commit.is_empty() {
        return Err("no commit".into());
    }
    let word = text("status");
    let status = match word.as_str() {
        "keep" => OutcomeStatus::Keep,
        "discard" => OutcomeStatus::Discard,
        "crash" | "checks_failed" => OutcomeStatus::Crash,
        other => {
            return Err(format!(
                "status {other:?} is not keep, discard, crash or checks_failed"
            ));
        }
    };
    let crash = status == OutcomeStatus::Crash;
    let number = |v: Option<&Value>| v.and_then(Value::as_f64).filter(|x| x.is_finite());
    let mut values = Vec::new();
    let primary =
        number(o.get("metric")).or_else(|| number(o.get("metrics").and_then(|m| m.get(metric))));
    match primary {
        // A crash has no score (pi writes 0 for it).
        Some(_) if crash => {}
        Some(x) => values.push((metric.to_string(), json!(x))),
        None if crash => {}
        None => return Err(format!("metric {metric} is not a number")),
    }
    if let Some(Value::Object(m)) = o.get("metrics") {
        for (k, v) in m {
            if k == metric {
                continue;
            }
            match number(Some(v)) {
                Some(x) if !(crash && x == 0.0) => values.push((k.clone(), json!(x))),
                Some(_) => {}
                None if v.is_string() => values.push((k.clone(), v.clone())),
                None => {}
            }
        }
    }
    if !unit.is_empty() && !crash {
        values.push((UNITS.to_string(), json!({ metric: unit })));
    }
    let mut pi: Map<String, Value> = Map::new();
    for k in ["run", "timestamp", "confidence", "iterationTokens", "asi"] {
        if let Some(v) = o.get(k).filter(|v| !v.is_null()) {
            pi.insert(k.to_string(), v.clone());
        }
    }
    if word == "checks_failed" {
        pi.insert("status".into(), json!(word));
    }
    if !pi.is_empty() {
        values.push((PI.to_string(), Value::Object(pi)));
    }
    Ok(TsvRow {
        line,
        commit,
        status,
        values,
        texts: Vec::new(),
        description: text("description"),
    })
}
