//! Reading an evaluator's metrics from its output.

use crate::config::MetricsFormat;
use serde_json::{Map, Value};

/// Why no usable metrics were found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// The output held no metric at all.
    #[error("no metric in the output")]
    Empty,
    /// A metric is `nan` or infinite, or a required metric is not a number.
    #[error("metric {name} is not a finite number ({value})")]
    NotFinite {
        /// The metric.
        name: String,
        /// Its value as found, JSON text.
        value: String,
    },
    /// A required metric is absent; holds its name.
    #[error("metric {0} is missing from the output")]
    Missing(String),
    /// The metrics file does not hold one JSON object; holds what was found
    /// or the parser's message.
    #[error("the metrics file is not a JSON object: {0}")]
    BadJson(String),
}

/// Parses `text` in `format` into a JSON object of metrics.
///
/// - `Lines`: every line `name: value` whose value parses as a number (other
///   lines, like karpathy's `----` separators or log chatter, are skipped;
///   a later line wins). `nan` and `inf` values are kept, so that
///   [`check`] can reject them.
/// - `Json`: the last line that is a JSON object.
/// - `File`: the whole text is one JSON object.
pub fn parse(format: &MetricsFormat, text: &str) -> Result<Map<String, Value>, MetricsError> {
    match format {
        MetricsFormat::Lines => Ok(parse_lines(text)),
        MetricsFormat::Json => Ok(text
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .find_map(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .unwrap_or_default()),
        MetricsFormat::File(_) => match serde_json::from_str::<Value>(text.trim()) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(MetricsError::BadJson(format!("found {other}"))),
            Err(e) => Err(MetricsError::BadJson(e.to_string())),
        },
    }
}

fn parse_lines(text: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            continue;
        }
        let value = value.trim();
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let json = serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        out.insert(name.to_string(), json);
    }
    out
}

/// Checks that `metrics` has at least one metric, every `required` one, and
/// no non-finite number (a `nan`/`inf` line, or a string such as `"NaN"`).
pub fn check(metrics: &Map<String, Value>, required: &[String]) -> Result<(), MetricsError> {
    if metrics.is_empty() {
        return Err(MetricsError::Empty);
    }
    for name in required {
        if !metrics.contains_key(name) {
            return Err(MetricsError::Missing(name.clone()));
        }
    }
    for (name, v) in metrics {
        let bad = match v {
            Value::String(s) => s
                .parse::<f64>()
                .map(|f| !f.is_finite())
                .unwrap_or(required.contains(name)),
            Value::Number(n) => n.as_f64().is_none_or(|f| !f.is_finite()),
            _ => required.contains(name),
        };
        if bad {
            return Err(MetricsError::NotFinite {
                name: name.clone(),
                value: v.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_case(
        format: MetricsFormat,
        text: &str,
        required: &[&str],
        expected: Result<Value, &str>,
    ) {
        let req: Vec<String> = required.iter().map(|s| s.to_string()).collect();
        let got = parse(&format, text).and_then(|m| check(&m, &req).map(|_| Value::Object(m)));
        match (got, expected) {
            (Ok(v), Ok(e)) => assert_eq!(v, e, "input {text:?}"),
            (Err(err), Err(needle)) => {
                assert!(
                    err.to_string().contains(needle),
                    "{err} should mention {needle}"
                )
            }
            (got, expected) => panic!("input {text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn karpathy_summary_lines() {
        let text = "step 100 loss 3.2\n---\nval_bpb:          0.997900\ntraining_seconds: 300.1\npeak_vram_mb:     45060.2\nnum_params_M:     50.3\n";
        check_case(
            MetricsFormat::Lines,
            text,
            &["val_bpb"],
            Ok(
                json!({"val_bpb": 0.9979, "training_seconds": 300.1, "peak_vram_mb": 45060.2, "num_params_M": 50.3}),
            ),
        );
    }

    #[test]
    fn cases() {
        use MetricsFormat::*;
        check_case(Lines, "nothing here\n", &[], Err("no metric"));
        check_case(Lines, "val_bpb: nan\n", &[], Err("not a finite"));
        check_case(Lines, "val_bpb: inf\n", &[], Err("not a finite"));
        check_case(Lines, "loss: 1\n", &["val_bpb"], Err("val_bpb is missing"));
        check_case(Lines, "a: 1\na: 2\n", &[], Ok(json!({"a": 2.0})));
        check_case(
            Json,
            "log\n{\"a\": 1}\n{\"b\": 2}\nbye\n",
            &[],
            Ok(json!({"b": 2})),
        );
        check_case(Json, "{\"a\": \"NaN\"}\n", &[], Err("not a finite"));
        check_case(Json, "[1]\n", &[], Err("no metric"));
        check_case(
            File("m.json".into()),
            "{\"a\": 0.5}",
            &["a"],
            Ok(json!({"a": 0.5})),
        );
        check_case(
            File("m.json".into()),
            "{oops",
            &[],
            Err("not a JSON object"),
        );
        check_case(
            File("m.json".into()),
            "{\"a\": \"x\"}",
            &["a"],
            Err("not a finite"),
        );
    }
}
