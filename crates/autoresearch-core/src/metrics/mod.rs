//! Reading an evaluator's metrics from its output: the one reader for every
//! source (standard output as `name: value` lines or JSON, a JSON file),
//! streaming, so that an output of any length is read whole while only a
//! bounded amount of it is held in memory.
//!
//! A [`MetricReader`] is fed the raw bytes in chunks of any size and keeps
//! the current line, the metrics found so far (the last occurrence of each
//! wins: training scripts print progress first) and a bounded set of lines
//! that nearly matched, so that a missing metric is explained by the line
//! that almost was one. What it understands:
//!
//! - ANSI escape sequences (colours, cursor moves) are removed, and `\r` is a
//!   line break as well as `\n` (progress bars redraw with `\r`).
//! - Lines: `name: value`, `name=value`, `name = value` and
//!   `METRIC name=value` (pi-autoresearch). The value is a number as Rust or
//!   Python prints it ([`num::parse_f64`]: `3.2e-08`, `1E+3`, `.5`, `+1`,
//!   `inf`, `nan`), optionally with thousands separators where unambiguous
//!   (`1,234`) and a trailing unit (`9 ms`, `9%`, `12GB`), which is recorded
//!   in [`MetricReading::units`] (stored under [`UNITS`] in a Result's
//!   outputs), never in the number.
//! - JSON: the last JSON object in the output (on one line or pretty-printed
//!   over several) is the metrics; a metrics file is one such object.
//!
//! A non-finite value (`nan`, `inf`) is read, and refused by
//! [`MetricReading::check`] with a reason naming it.

use crate::num;
use line::{LineKind, parse_metric_line};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Read;

mod line;

/// The key, in a Result's outputs, of the units metrics were printed with
/// (`{"latency": "ms", "acc": "%"}`), beside the numeric metrics themselves.
pub const UNITS: &str = "_units";

/// Lines longer than this are not metric lines: they are skipped whole (only
/// their start is looked at), so a binary blob in a log costs no memory.
const MAX_LINE: usize = 64 * 1024;
/// A JSON object larger than this is refused (a metrics file is small).
const MAX_JSON: usize = 64 * 1024 * 1024;
/// Near misses remembered by name; later names are not recorded once full.
const MAX_MISSES: usize = 256;
/// Characters of a line quoted in an error.
const QUOTE: usize = 160;

/// How the output is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricSyntax {
    /// `name: value` lines (and `name=value`, `METRIC name=value`).
    #[default]
    Lines,
    /// JSON objects in the output; the last one is the metrics.
    Json,
    /// A file holding one JSON object.
    JsonFile,
}

/// What to read: the syntax, and the metrics that must be there (the reader
/// remembers the lines that mention them, to explain their absence).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricSpec {
    /// How metrics are printed.
    pub syntax: MetricSyntax,
    /// Metric names every output must hold.
    #[serde(default)]
    pub required: Vec<String>,
}

/// A line that nearly held a metric, and why it did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearMiss {
    /// 1-based line number (`\n`-separated) in the output.
    pub line: u64,
    /// The line (escape sequences removed), cut to a readable length.
    pub text: String,
    /// Why it is not a metric (a comma that is no thousands separator, ...).
    pub why: String,
}

impl std::fmt::Display for NearMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} `{}`: {}", self.line, self.text, self.why)
    }
}

/// Why the metrics of an output are not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The output held no metric at all.
    #[error(
        "no metric in the output ({lines} lines read){}",
        nearest_text(nearest)
    )]
    Empty {
        /// Lines read.
        lines: u64,
        /// The line that came nearest to a metric, if any.
        nearest: Option<NearMiss>,
    },
    /// A metric is `nan` or infinite.
    #[error("metric {name} is not a finite number ({value}){}", line.map(|l| format!(" on line {l}")).unwrap_or_default())]
    NotFinite {
        /// The metric.
        name: String,
        /// Its value as printed.
        value: String,
        /// The line it was read from, when known.
        line: Option<u64>,
    },
    /// A required metric is absent.
    #[error("metric {name} is missing from the output{}", nearest_text(nearest))]
    Missing {
        /// The metric.
        name: String,
        /// The line that came nearest to holding it, if any.
        nearest: Option<NearMiss>,
    },
    /// The metrics file does not hold one JSON object; holds the parser's
    /// message or what was found.
    #[error("the metrics file is not a JSON object: {0}")]
    BadJson(String),
}

fn nearest_text(n: &Option<NearMiss>) -> String {
    n.as_ref()
        .map(|n| format!("; nearest: {n}"))
        .unwrap_or_default()
}

/// What a reader found in a whole output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricReading {
    /// The metrics: numbers (a string for a non-finite value as printed; in
    /// JSON, whatever the object held).
    pub values: Map<String, Value>,
    /// The unit each metric was printed with, when it had one.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// The line each metric was last read from.
    #[serde(default)]
    pub found_on: BTreeMap<String, u64>,
    /// Lines that nearly held a metric: the last per name mentioned, and the
    /// last of all (bounded).
    #[serde(default)]
    pub near: Vec<NearMiss>,
    /// Lines read (the whole output).
    pub lines: u64,
    /// Bytes read (the whole output).
    pub bytes: u64,
    /// For a metrics file that is not one JSON object: why.
    #[serde(default)]
    pub bad_json: Option<String>,
}

impl MetricReading {
    /// Checks that there is at least one metric, every `required` one, and
    /// no non-finite number (a `nan`/`inf` line, a string such as `"NaN"`,
    /// or a required metric that is not a number).
    pub fn check(&self, required: &[String]) -> Result<(), MetricsError> {
        if let Some(why) = &self.bad_json {
            return Err(MetricsError::BadJson(why.clone()));
        }
        if self.values.is_empty() {
            return Err(MetricsError::Empty {
                lines: self.lines,
                nearest: self.near.last().cloned(),
            });
        }
        for name in required {
            if !self.values.contains_key(name) {
                return Err(MetricsError::Missing {
                    name: name.clone(),
                    nearest: self.nearest(name),
                });
            }
        }
        for (name, v) in &self.values {
            let bad = match v {
                Value::String(s) => num::parse_f64(s)
                    .map(|f| !f.is_finite())
                    .unwrap_or(required.contains(name)),
                Value::Number(n) => n.as_f64().is_none_or(|f| !f.is_finite()),
                _ => required.contains(name),
            };
            if bad {
                return Err(MetricsError::NotFinite {
                    name: name.clone(),
                    value: v.to_string(),
                    line: self.found_on.get(name).copied(),
                });
            }
        }
        Ok(())
    }

    /// The line that best explains why `name` is missing: one that mentions
    /// it, else a metric of the same name in another case, else the metric
    /// whose name is nearest to it (at most two edits apart, Damerau-
    /// Levenshtein: `val_bp` for `val_bpb`, `val-bpb` for `val_bpb`), else
    /// the last near miss.
    fn nearest(&self, name: &str) -> Option<NearMiss> {
        let lower = name.to_ascii_lowercase();
        if let Some(m) = self
            .near
            .iter()
            .rev()
            .find(|m| m.text.to_ascii_lowercase().contains(&lower))
        {
            return Some(m.clone());
        }
        if let Some((found, _)) = self
            .values
            .iter()
            .find(|(k, _)| k.to_ascii_lowercase() == lower)
        {
            return Some(NearMiss {
                line: self.found_on.get(found).copied().unwrap_or(0),
                text: found.clone(),
                why: format!("metric names are case-sensitive: `{found}` is not `{name}`"),
            });
        }
        if let Some((_, found)) = self
            .values
            .keys()
            .map(|k| (strsim::damerau_levenshtein(k, name), k))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
        {
            return Some(NearMiss {
                line: self.found_on.get(found).copied().unwrap_or(0),
                text: found.clone(),
                why: format!("the output has metric `{found}`, not `{name}`: a misspelling?"),
            });
        }
        self.near.last().cloned()
    }

    /// The metrics as a Result's outputs: the values, plus [`UNITS`] when
    /// any metric had a unit.
    pub fn into_outputs(self) -> Map<String, Value> {
        let mut out = self.values;
        if !self.units.is_empty() {
            let units = self
                .units
                .into_iter()
                .map(|(k, u)| (k, Value::String(u)))
                .collect();
            out.insert(UNITS.to_string(), Value::Object(units));
        }
        out
    }
}

/// A JSON object being collected across lines.
struct JsonAcc {
    line: u64,
    buf: String,
    depth: i32,
    in_str: bool,
    esc: bool,
}

/// The streaming reader. Memory: the current line (at most 64 KiB kept),
/// the metrics, a bounded set of near misses and, for JSON, the object being
/// read (at most 64 MiB).
pub struct MetricReader {
    spec: MetricSpec,
    /// Substring finders of the required names' spellings, by name index.
    finders: Vec<(usize, memchr::memmem::Finder<'static>)>,
    partial: Vec<u8>,
    overlong: bool,
    /// The number of the line being read (1-based).
    line: u64,
    reading: MetricReading,
    /// Near misses by lower-case name (insertion-bounded), and the last one.
    misses: BTreeMap<String, NearMiss>,
    last_miss: Option<NearMiss>,
    json: Option<JsonAcc>,
}

impl MetricReader {
    /// A reader of outputs in `spec`'s syntax, watching for its required
    /// metrics.
    pub fn new(spec: MetricSpec) -> Self {
        let mut finders = Vec::new();
        for (i, r) in spec.required.iter().enumerate() {
            let mut spellings = vec![r.clone(), r.to_ascii_lowercase(), r.to_ascii_uppercase()];
            spellings.sort();
            spellings.dedup();
            for s in spellings.iter().filter(|s| !s.is_empty()) {
                finders.push((i, memchr::memmem::Finder::new(s.as_bytes()).into_owned()));
            }
        }
        MetricReader {
            spec,
            finders,
            partial: Vec::new(),
            overlong: false,
            line: 1,
            reading: MetricReading::default(),
            misses: BTreeMap::new(),
            last_miss: None,
            json: None,
        }
    }

    /// Reads the next chunk of output (any size, split anywhere).
    pub fn feed(&mut self, mut chunk: &[u8]) {
        self.reading.bytes += chunk.len() as u64;
        while let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) {
            let newline = chunk[i] == b'\n';
            if self.partial.is_empty() {
                if !self.overlong {
                    self.segment_bytes(&chunk[..i]);
                }
            } else {
                self.push_partial(&chunk[..i]);
                let seg = std::mem::take(&mut self.partial);
                if !self.overlong {
                    self.segment_bytes(&seg);
                }
                self.partial = seg;
                self.partial.clear();
            }
            self.overlong = false;
            if newline {
                self.line += 1;
            }
            chunk = &chunk[i + 1..];
        }
        self.push_partial(chunk);
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        let cap = match self.spec.syntax {
            MetricSyntax::Lines => MAX_LINE,
            MetricSyntax::Json | MetricSyntax::JsonFile => MAX_JSON,
        };
        let room = cap.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.overlong = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Reads everything from `r` (in 64 KiB chunks) and finishes.
    pub fn read_all(mut self, mut r: impl Read) -> std::io::Result<MetricReading> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.finish())
    }

    /// The end of the output: reads the last line and returns what was found.
    pub fn finish(mut self) -> MetricReading {
        let unterminated = !self.partial.is_empty();
        if unterminated && !self.overlong {
            let seg = std::mem::take(&mut self.partial);
            self.segment_bytes(&seg);
        }
        if let Some(acc) = self.json.take() {
            let why = match serde_json::from_str::<Value>(&acc.buf) {
                Err(e) => e.to_string(),
                Ok(_) => "it does not end".to_string(),
            };
            self.miss(
                "",
                acc.line,
                first_line(&acc.buf),
                format!("a JSON object starts here but does not parse: {why}"),
            );
            if self.spec.syntax == MetricSyntax::JsonFile && self.reading.values.is_empty() {
                self.reading.bad_json = Some(why);
            }
        }
        if self.spec.syntax == MetricSyntax::JsonFile
            && self.reading.values.is_empty()
            && self.reading.bad_json.is_none()
        {
            self.reading.bad_json = Some(match &self.last_miss {
                Some(m) => m.why.clone(),
                None => "it holds no JSON object".to_string(),
            });
        }
        let mut near: Vec<NearMiss> = self.misses.into_values().collect();
        near.sort_by_key(|m| m.line);
        if let Some(last) = self.last_miss
            && near.last() != Some(&last)
        {
            near.push(last);
        }
        self.reading.near = near;
        self.reading.lines = self.line - u64::from(!unterminated);
        self.reading
    }

    fn segment_bytes(&mut self, seg: &[u8]) {
        if seg.is_empty() {
            return;
        }
        if memchr::memchr(0x1b, seg).is_some() {
            // The common sequences (CSI colours and cursor moves, OSC
            // titles) are removed in one pass; anything else goes through
            // `strip-ansi-escapes` (a full VT parser, slower).
            let clean = strip_common_ansi(seg).unwrap_or_else(|| strip_ansi_escapes::strip(seg));
            self.segment_text(&String::from_utf8_lossy(&clean));
        } else {
            match std::str::from_utf8(seg) {
                Ok(s) => self.segment_text(s),
                Err(_) => self.segment_text(&String::from_utf8_lossy(seg)),
            }
        }
    }

    fn segment_text(&mut self, text: &str) {
        // A byte-order mark (a file written on Windows) is no content.
        let text = text.trim_start_matches('\u{feff}');
        match self.spec.syntax {
            MetricSyntax::Lines => self.metric_line(text),
            MetricSyntax::Json | MetricSyntax::JsonFile => self.json_line(text),
        }
    }

    /// Remembers a line that nearly held a metric: the last one per
    /// required name (whatever else was found), and the last one of all
    /// while no metric has been found (it explains an empty reading). Once
    /// a metric is found, other near misses cost nothing: long logs are
    /// mostly such lines.
    fn miss(&mut self, name: &str, line: u64, text: &str, why: impl std::fmt::Display) {
        let required = self
            .spec
            .required
            .iter()
            .find(|r| r.eq_ignore_ascii_case(name));
        if required.is_none() && !self.reading.values.is_empty() {
            return;
        }
        let m = NearMiss {
            line,
            text: quote(text),
            why: why.to_string(),
        };
        if let Some(r) = required {
            let key = r.to_ascii_lowercase();
            if self.misses.len() < MAX_MISSES || self.misses.contains_key(&key) {
                self.misses.insert(key, m.clone());
            }
        }
        self.last_miss = Some(m);
    }

    fn record(&mut self, name: &str, value: Value, unit: Option<&str>) {
        match unit {
            Some(u) => {
                self.reading.units.insert(name.to_string(), u.to_string());
            }
            None => {
                self.reading.units.remove(name);
            }
        }
        self.reading.found_on.insert(name.to_string(), self.line);
        self.reading.values.insert(name.to_string(), value);
    }

    fn metric_line(&mut self, raw: &str) {
        let t = raw.trim();
        if t.is_empty() {
            return;
        }
        match parse_metric_line(t) {
            LineKind::Metric { name, value, unit } => {
                let v = match value {
                    Ok(x) => serde_json::Number::from_f64(x)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                    Err(text) => Value::String(text.to_string()),
                };
                self.record(name, v, unit);
            }
            LineKind::Miss { name, why } => {
                let line = self.line;
                self.miss(name, line, t, why);
            }
            LineKind::Json => {
                let line = self.line;
                self.miss(
                    "",
                    line,
                    t,
                    "a JSON object: set `metrics = \"json\"` to read JSON".to_string(),
                );
            }
            LineKind::Other => {
                if let Some(name) = self.mentioned(t) {
                    let line = self.line;
                    let why = format!(
                        "it mentions `{name}` but is not `{name}: VALUE` or `{name}=VALUE`"
                    );
                    self.miss(&name, line, t, why);
                }
            }
        }
    }

    /// A required metric this line mentions (as written, in lower or in
    /// upper case): one SIMD substring search per spelling, no allocation.
    fn mentioned(&self, t: &str) -> Option<String> {
        self.finders
            .iter()
            .find(|(_, f)| f.find(t.as_bytes()).is_some())
            .map(|(i, _)| self.spec.required[*i].clone())
    }

    fn json_line(&mut self, raw: &str) {
        if self.json.is_none() {
            let t = raw.trim_start();
            if !t.starts_with('{') {
                if !t.trim().is_empty() && self.spec.syntax == MetricSyntax::JsonFile {
                    let line = self.line;
                    self.miss("", line, t, "text outside a JSON object".to_string());
                }
                return;
            }
            self.json = Some(JsonAcc {
                line: self.line,
                buf: String::new(),
                depth: 0,
                in_str: false,
                esc: false,
            });
        }
        let Some(acc) = self.json.as_mut() else {
            return;
        };
        let start = if acc.buf.is_empty() {
            raw.len() - raw.trim_start().len()
        } else {
            0
        };
        let text = &raw[start..];
        let mut end = None;
        for (i, b) in text.bytes().enumerate() {
            if acc.in_str {
                if acc.esc {
                    acc.esc = false;
                } else if b == b'\\' {
                    acc.esc = true;
                } else if b == b'"' {
                    acc.in_str = false;
                }
                continue;
            }
            match b {
                b'"' => acc.in_str = true,
                b'{' | b'[' => acc.depth += 1,
                b'}' | b']' => {
                    acc.depth -= 1;
                    if acc.depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        acc.buf.push_str(&text[..end.unwrap_or(text.len())]);
        if end.is_none() {
            acc.buf.push('\n');
            if acc.buf.len() > MAX_JSON {
                let line = acc.line;
                self.json = None;
                self.miss(
                    "",
                    line,
                    "{",
                    format!("a JSON object over {MAX_JSON} bytes"),
                );
            }
            return;
        }
        let Some(acc) = self.json.take() else {
            return;
        };
        match serde_json::from_str::<Value>(&acc.buf) {
            Ok(Value::Object(m)) => {
                self.reading.found_on = m.keys().map(|k| (k.clone(), acc.line)).collect();
                self.reading.values = m;
                self.reading.units.clear();
            }
            Ok(other) => {
                self.miss(
                    "",
                    acc.line,
                    first_line(&acc.buf),
                    format!("not a JSON object: {other}"),
                );
            }
            Err(e) => {
                let why = format!("a JSON object that does not parse: {e}");
                self.miss("", acc.line, first_line(&acc.buf), why);
            }
        }
    }
}

/// `seg` without its CSI (`ESC [ ... final`) and OSC (`ESC ] ... BEL` or
/// `ESC ] ... ESC \`) sequences and two-byte escapes (`ESC 7`, `ESC =`);
/// `None` at anything else (DCS, an unterminated sequence), for the full
/// parser to handle.
fn strip_common_ansi(seg: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while let Some(j) = memchr::memchr(0x1b, &seg[i..]) {
        let esc = i + j;
        out.extend_from_slice(&seg[i..esc]);
        match seg.get(esc + 1)? {
            b'[' => {
                let mut k = esc + 2;
                while seg.get(k).is_some_and(|b| (0x20..=0x3f).contains(b)) {
                    k += 1;
                }
                if !seg.get(k).is_some_and(|b| (0x40..=0x7e).contains(b)) {
                    return None;
                }
                i = k + 1;
            }
            b']' => {
                let body = &seg[esc + 2..];
                let end = memchr::memchr2(0x07, 0x1b, body)?;
                i = esc + 2 + end + 1;
                if body[end] == 0x1b {
                    if body.get(end + 1) != Some(&b'\\') {
                        return None;
                    }
                    i += 1;
                }
            }
            b'P' | b'X' | b'^' | b'_' => return None,
            b if (0x30..=0x7e).contains(b) => i = esc + 2,
            _ => return None,
        }
    }
    out.extend_from_slice(&seg[i..]);
    Some(out)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Reads a whole text at once (tests, executors that hold the output).
pub fn read_text(spec: &MetricSpec, text: &str) -> MetricReading {
    let mut r = MetricReader::new(spec.clone());
    r.feed(text.as_bytes());
    r.finish()
}
