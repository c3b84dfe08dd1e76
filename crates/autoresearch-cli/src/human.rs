//! How the read commands show values to people: local timestamps,
//! durations, numbers, a comparator's descriptor as `key value` pairs and
//! error tails as text, and [`Lines`], the one renderer of `label  value`
//! reports (`status`, `show`, `best`). `--json` keeps every stored detail;
//! this module is for the plain output only.

use autoresearch_core::num::fmt_f64;
use chrono::{DateTime, Local};
use serde_json::Value;
use std::fmt::Write as _;

/// Unix milliseconds as a local timestamp (`2026-11-30 05:01:02`); `-` for
/// 0 (not set).
pub fn local_time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    match DateTime::from_timestamp_millis(ms) {
        Some(t) => t
            .with_timezone(&Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => ms.to_string(),
    }
}

/// A duration in milliseconds for people: `850ms`, `12.3s`, `4m 05s`,
/// `2h 03m`, `3d 4h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m {:02}s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A start and end as `local start, took D`; while unfinished (`active`)
/// `local start, running for D` measured against `now_ms`; a finished run
/// without an end time (an import) shows its start only.
pub fn span(started_ms: i64, finished_ms: i64, now_ms: i64, active: bool) -> String {
    if started_ms <= 0 {
        return "-".into();
    }
    if finished_ms >= started_ms {
        format!(
            "{}, took {}",
            local_time(started_ms),
            duration(finished_ms - started_ms)
        )
    } else if active {
        format!(
            "{}, running for {}",
            local_time(started_ms),
            duration(now_ms - started_ms)
        )
    } else {
        local_time(started_ms)
    }
}

/// A computed number (a mean, a delta, a p-value) for people: at most six
/// significant digits, so that float noise (`-0.00022900000000000698`)
/// reads `-0.000229`. Measured values are shown with [`fmt_f64`], in full.
pub fn num(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return fmt_f64(x);
    }
    let magnitude = x.abs().log10().floor() as i32;
    if !(-5..=15).contains(&magnitude) {
        // Very small or large: scientific, six significant digits.
        let text = format!("{x:.5e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exp}");
    }
    let places = (5 - magnitude).max(0) as usize;
    let text = format!("{x:.places$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    if text == "-0" { "0".into() } else { text }
}

/// A JSON value for people: numbers by [`num`], strings bare, arrays and
/// objects compact.
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), num),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(value).collect::<Vec<_>>().join(", "),
        Value::Object(_) => {
            let mut out = Vec::new();
            flatten("", v, &mut out);
            out.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// A JSON object flattened to `(dotted.key, text)` pairs in its order.
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), value(other))),
    }
}

/// A report of `label  value` lines, rendered in one place so that every
/// command lines up alike and new lines are one call away. A value of
/// several lines (an error tail, a diff stat) continues in the value column.
#[derive(Default)]
pub struct Lines {
    rows: Vec<(String, String)>,
}

/// The width labels are padded to.
const LABEL: usize = 10;

impl Lines {
    /// A line `label  value`.
    pub fn push(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.rows.push((label.into(), value.into()));
        self
    }

    /// A line only when `value` is `Some` and not empty.
    pub fn push_some(&mut self, label: &str, value: Option<String>) -> &mut Self {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.push(label, v);
        }
        self
    }

    /// The report's text, ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (label, value) in &self.rows {
            let mut lines = value.trim_end().lines();
            let first = lines.next().unwrap_or("");
            let _ = writeln!(out, "{label:<LABEL$} {first}");
            for l in lines {
                let _ = writeln!(out, "{:<LABEL$} {l}", "");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_lose_float_noise_not_digits() {
        let cases = [
            (-0.000_229_000_000_000_006_98, "-0.000229"),
            (0.978_123_456, "0.978123"),
            (97.0, "97"),
            (123_456.789, "123457"),
            (1.5, "1.5"),
            (0.0, "0"),
            (3.2e-8, "3.2e-8"),
            (-2.5e20, "-2.5e20"),
            (0.00531, "0.00531"),
        ];
        for (x, want) in cases {
            assert_eq!(num(x), want, "{x}");
        }
    }

    #[test]
    fn durations_read_as_people_say_them() {
        let cases = [
            (0, "0ms"),
            (850, "850ms"),
            (12_345, "12.3s"),
            (245_000, "4m 05s"),
            (7_380_000, "2h 03m"),
            (273_600_000, "3d 4h"),
            (-5, "0ms"),
        ];
        for (ms, want) in cases {
            assert_eq!(duration(ms), want, "{ms}");
        }
    }

    #[test]
    fn spans_say_took_running_or_only_the_start() {
        let t = 1_775_822_400_000;
        assert!(span(t, t + 1500, t + 9000, false).ends_with(", took 1.5s"));
        assert!(span(t, 0, t + 90_000, true).ends_with(", running for 1m 30s"));
        assert!(!span(t, 0, t + 90_000, false).contains(','));
        assert_eq!(span(0, 0, t, true), "-");
    }

    #[test]
    fn descriptors_flatten_to_key_value_text() {
        let v = serde_json::json!({"delta": -0.000229000000000007, "test": {"p": 0.00531, "alpha": 0.0125}, "tail": "sh: 1: claude: not found"});
        assert_eq!(
            value(&v),
            "delta -0.000229, tail sh: 1: claude: not found, test.alpha 0.0125, test.p 0.00531"
        );
    }

    #[test]
    fn lines_align_and_indent_continuations() {
        let mut l = Lines::default();
        l.push("head", "abc1234")
            .push("error", "line one\nline two\n");
        l.push_some("none", None)
            .push_some("empty", Some(String::new()));
        assert_eq!(
            l.render(),
            "head       abc1234\nerror      line one\n           line two\n"
        );
    }
}
